"""Checking and dropping one archived, claimed job: its table's policy, asked of the catalog, must still make it due;
the lake re-check runs beside the dropper's proof that the chunk is unchanged, and only both passing drops it. A chunk
that changed goes back to the archive stage through the one `rearchive` call the engine hands in, then is checked again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import UTC, datetime

import psycopg

from .. import telemetry
from ..database import catalog
from ..errors import ArchiverError, SourceChangedError, UnsupportedTypeError, VerificationError, render_error
from ..ledger.jobs import Job, Ledger
from ..planning import Decision, decide
from ..policies import job_policy
from ..results import Clock, Progress, StepResult
from ..settings import Settings
from .dropper import ChunkDropper

log = logging.getLogger("tsarchive")

MAX_REARCHIVES = 3
_first_line = render_error

Rearchive = Callable[[int], StepResult]  # archive a job again, its chunk having changed (Engine.archive, rearchive=True)


class DropStage:
    """One claimed, archived job's drop, re-archiving first (at most MAX_REARCHIVES times) if its chunk changed."""

    def __init__(self, conn: psycopg.Connection, ledger: Ledger, dropper: ChunkDropper,
                 check_archive: Callable[..., list[str]], settings: Settings, *, clock: Clock, progress: Progress,
                 rearchive: Rearchive) -> None:
        self.conn, self.ledger, self.dropper, self.check_archive = conn, ledger, dropper, check_archive
        self.settings, self.clock, self.progress, self.rearchive = settings, clock, progress, rearchive

    def blocker(self, job: Job) -> str | None:
        """Why this chunk must not be dropped now (retention or a continuous aggregate changed), or None.

        Asks the catalog for this job's table policy alone; a chunk already gone from the catalog is not blocked (the
        drop records it as already dropped)."""
        policy = job_policy(self.conn, self.settings, job, self.clock())
        if policy is None:
            reason = "not in the current plan (table excluded or no longer configured)"
        else:
            entry = decide(job.chunk, policy)
            if entry.decision == Decision.DUE:
                return None
            reason = entry.reason or f"no longer due ({entry.decision})"
        return reason if catalog.relation_exists(self.conn, job.chunk_schema, job.chunk_name) else None

    def drop_claimed(self, job: Job, started: float) -> StepResult:
        """Drop the job's chunk once its policy still makes it due and its archive re-checks clean; re-archive and
        re-check when the chunk changed."""
        name = job.chunk.qualified_chunk
        blocker = self.blocker(job)
        if blocker:
            self.ledger.hold_drop(job.id, blocker)
            return StepResult(job.id, name, "drop", "skipped", f"kept: {blocker}")
        for _ in range(MAX_REARCHIVES + 1):
            try:
                with telemetry.span("drop", job_id=job.id, table=job.table, chunk=name):
                    result = self._drop_guarded(job, started)
                if result.outcome == "done":
                    telemetry.chunks_dropped.add(1, {"table": job.table})
                    if job.archived_at is not None:
                        lag = (datetime.now(UTC) - job.archived_at).total_seconds()
                        telemetry.drop_lag.record(max(lag, 0.0), {"table": job.table})
                    telemetry.step_duration.record(result.seconds, {"step": "drop", "table": job.table})
                elif result.outcome == "failed":
                    telemetry.chunks_failed.add(1, {"step": "drop", "table": job.table})
                return result
            except (SourceChangedError, VerificationError) as change:
                log.warning("job %s: %s; re-archiving before drop", job.id, change, extra={"job_id": job.id})
                self.progress("rearchiving", job, {"reason": str(change)})
                result = self.rearchive(job.id)
                if result.outcome != "done":
                    return StepResult(job.id, name, "drop", "failed", f"re-archive failed: {result.detail}",
                                      seconds=time.monotonic() - started)
                refreshed = self.ledger.get(job.id)
                assert refreshed is not None
                job = refreshed
        return StepResult(job.id, name, "drop", "failed",
                          f"chunk kept changing during {MAX_REARCHIVES} re-archives; will retry next run",
                          seconds=time.monotonic() - started)

    def _drop_guarded(self, job: Job, started: float) -> StepResult:
        """_drop_archived, with any database or archiver error recorded on the job instead of raised."""
        try:
            return self._drop_archived(job, started)
        except (SourceChangedError, VerificationError):
            raise  # handled by the caller: re-archive
        except (psycopg.Error, ArchiverError, OSError) as error:
            message = _first_line(error)
            try:
                self.ledger.note_error(job.id, f"drop: {message}")
            except psycopg.Error:
                pass
            log.error("job %s drop failed: %s", job.id, message, extra={"job_id": job.id})
            return StepResult(job.id, job.chunk.qualified_chunk, "drop", "failed", message,
                              seconds=time.monotonic() - started)

    def _drop_archived(self, job: Job, started: float) -> StepResult:
        """Re-check the lake (on a second thread) while the dropper proves the chunk unchanged; drop if both pass."""
        name = job.chunk.qualified_chunk
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsarchive-recheck") as pool:
            lake_check = pool.submit(self.check_archive, job, checksum=self.settings.drop_recheck == "checksum")

            def confirm_archive(exists: bool, timeout: float | None) -> bool:
                try:
                    problems = list(lake_check.result(timeout=timeout))
                except FuturesTimeout:
                    return False
                if not job.table_path and exists:
                    problems.append("archived in the layout before Delta Lake tables; archiving it again into its table")
                if problems and exists:
                    raise VerificationError("archive re-check failed: " + "; ".join(problems))
                if problems:
                    raise ArchiverError(f"{name} is gone but its archive fails the re-check: {'; '.join(problems)}")
                return True

            try:
                outcome = self.dropper.drop(job, confirm_archive)
            except UnsupportedTypeError as error:
                return StepResult(job.id, name, "drop", "failed", _first_line(error), seconds=time.monotonic() - started)
        if not outcome.done:
            return StepResult(job.id, name, "drop", "failed", outcome.detail, seconds=time.monotonic() - started)
        self.progress("dropped", job, {})
        log.info("job %s dropped %s", job.id, name, extra={"job_id": job.id})
        return StepResult(job.id, name, "drop", "done", outcome.detail, rows=job.row_count or 0,
                          bytes=job.byte_count or 0, seconds=time.monotonic() - started)
