"""The archive engine: plan, archive (extract -> Parquet -> verify -> publish), drop. Every step is idempotent."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import telemetry
from .archive.stage import ChunkArchiver, job_layout
from .database import connection as db
from .database.extract import Extractor
from .drop.dropper import ChunkDropper
from .drop.stage import DropStage
from .errors import (
    JobStateError,
    render_error,
)
from .ledger.jobs import Job, JobState, Ledger
from .planning import Decision, PlanEntry, plan
from .policies import read_policies
from .reporting import table_status, tier_bytes
from .results import Clock, Progress, RunReport, StepResult
from .settings import Settings
from .storage.lake import Lake
from .storage.layout import ChunkLayout
from .storage.vault import Vault, make_vault
from .verify.archive_check import ArchiveChecker
from .verify.verification import run_drill, verify_archives

if TYPE_CHECKING:
    from .restore.context import RestoreContext

log = logging.getLogger("tsarchive")



def utcnow() -> datetime:
    return datetime.now(UTC)


_first_line = render_error


class Engine:
    """One worker: a psycopg connection for catalog/ledger/DDL, ADBC for rows, a lake."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow, progress: Progress | None = None,
                 lake: Lake | None = None, vault: Vault | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.progress = progress or (lambda *_: None)
        self.conn = db.connect(settings.database_dsn())
        # Every wait for a table lock is bounded (ARCHIVER_LOCK_TIMEOUT_MS): a chunk held by DDL fails this attempt,
        # which is retried with backoff, instead of stalling the worker until the function times out.
        self.conn.execute(f"SET lock_timeout = '{int(settings.lock_timeout_ms)}ms'")
        try:
            db.refuse_transaction_pooling(self.conn, settings.database_dsn)  # a DSN (maybe a token) only if probing
        except BaseException:
            self.conn.close()
            raise
        self.ledger = Ledger(self.conn, settings.ledger_schema)
        conn_string = settings.lake_connection_string.get_secret_value() if settings.lake_connection_string else None
        self.lake = lake or Lake(settings.lake_url, conn_string, settings.lake_client_id)
        self.vault = vault or make_vault(settings)
        self._migrated = False
        # The WASM TimescaleDB build runs one transaction at a time, so a second snapshot-sharing stream would wait forever.
        self.serial = db.serializes_transactions(self.conn)  # then also one chunk at a time
        streams = 1 if self.serial else settings.extract_streams
        self.extractor = Extractor(settings.database_dsn, batch_size_bytes=settings.batch_size_bytes,
                                   max_streams=streams, lock_timeout_ms=settings.lock_timeout_ms)
        self.dropper = ChunkDropper(self.conn, self.ledger, lock_timeout_ms=settings.lock_timeout_ms,
                                    drop_lock_timeout_ms=settings.drop_lock_timeout_ms, retries=settings.drop_retries,
                                    unsupported_as_text=settings.unsupported_as_text)

    def close(self) -> None:
        try:
            self.extractor.close()
        finally:
            self.conn.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- setup ---------------------------------------------------------------------------------
    def init(self) -> int:
        version = self.ledger.migrate()
        self._migrated = True
        return version

    def _ensure_ledger(self) -> None:
        if not self._migrated:
            self.init()

    # -- planning ------------------------------------------------------------------------------
    def plan(self, hypertable: str | None = None, older_than: datetime | None = None) -> list[PlanEntry]:
        """Classify every chunk of every selected table."""
        with telemetry.span("plan", hypertable=hypertable):
            return self._plan(hypertable, older_than)

    def _plan(self, hypertable: str | None, older_than: datetime | None) -> list[PlanEntry]:
        chunks, policies = read_policies(self.conn, self.settings, self.clock(), hypertable, older_than)
        return plan(chunks, policies)

    def record_plan(self, entries: list[PlanEntry]) -> list[Job]:
        """Write due and blocked chunks to the ledger; existing jobs keep their progress."""
        self._ensure_ledger()
        states = {Decision.DUE: JobState.PLANNED, Decision.BLOCKED: JobState.BLOCKED}
        jobs = self.ledger.record_many([(e.chunk, states[e.decision], e.reason if e.decision == Decision.BLOCKED else "")
                                        for e in entries if e.decision in states])
        backlog: dict[str, int] = {}
        oldest: dict[str, float] = {}
        now = self.clock()
        for job in jobs:
            if job.state not in (JobState.BLOCKED, JobState.ARCHIVED):
                backlog[job.table] = backlog.get(job.table, 0) + 1
                if isinstance(job.range_end, datetime):
                    age = max(0.0, (now - job.range_end).total_seconds())
                    oldest[job.table] = max(oldest.get(job.table, 0.0), age)
        for table in {e.chunk.table for e in entries}:
            telemetry.set_backlog(table, backlog.get(table, 0), oldest.get(table, 0.0))
        return jobs

    # -- archive -------------------------------------------------------------------------------
    def _layout(self, job: Job) -> ChunkLayout:
        return job_layout(self.settings, job)

    def _claimed_job(self, job_id: int, held: bool, step: str) -> tuple[Job, StepResult | None]:
        """The job, and a 'skipped' result when another worker holds it."""
        job = self.ledger.get(job_id)
        if job is None:
            raise JobStateError(f"job {job_id} does not exist")
        if not held:
            return job, StepResult(job_id, job.chunk.qualified_chunk, step, "skipped", "another worker holds this job")
        return job, None

    def archive(self, job_id: int, *, rearchive: bool = False) -> StepResult:
        """Claim one job and hand it to the archive stage (extract, write, verify, commit, record). Safe to repeat."""
        self._ensure_ledger()
        started = time.monotonic()
        with self.ledger.claimed(job_id) as held:
            job, busy = self._claimed_job(job_id, held, "archive")
            if busy:
                return busy
            stage = ChunkArchiver(self.conn, self.ledger, self.lake, self.vault, self.extractor, self.settings,
                                  clock=self.clock, progress=self.progress)
            return stage.archive_claimed(job, started, rearchive=rearchive)

    # -- verify ---------------------------------------------------------------------------------
    def checker(self) -> ArchiveChecker:
        return ArchiveChecker(self.lake, self._layout, self.vault)

    def check_archive(self, job: Job, *, checksum: bool = True) -> list[str]:
        """Problems with a job's archive before its drop; empty when its files match the ledger, are live in the
        Delta table and, with a vault, are sealed there."""
        return self.checker().problems(job, checksum=checksum, before_drop=True)

    def restore_context(self) -> RestoreContext:
        """What a restore is handed: the connections, the ledger (migrated), the lake and the archive check."""
        from .restore.context import RestoreContext

        self._ensure_ledger()
        return RestoreContext(conn=self.conn, ledger=self.ledger, lake=self.lake, check_archive=self.check_archive,
                              row_connection=self.extractor.connection, serial=self.serial,
                              lock_timeout_ms=self.settings.lock_timeout_ms)

    def drill(self, sample: int | None = None, table: str | None = None, drill_id: int | None = None) -> list[StepResult]:
        """The recovery drill: verify --deep on every archive (or a random sample), recorded in the ledger."""
        self._ensure_ledger()
        return run_drill(self.ledger, self.lake, self.checker(), sample=sample, table=table, drill_id=drill_id)

    def verify(self, job_ids: list[int] | None = None, table: str | None = None, *, deep: bool = False,
               sample: int | None = None) -> list[StepResult]:
        """Re-check archives against the ledger; deep decodes every file and recomputes the content hash."""
        self._ensure_ledger()
        return verify_archives(self.ledger, self.lake, self.checker(), job_ids=job_ids, table=table, deep=deep,
                               sample=sample)

    def drop(self, job_id: int) -> StepResult:
        """Claim an archived job and hand it to the drop stage: policy, archive and chunk re-checked, then dropped."""
        self._ensure_ledger()
        started = time.monotonic()
        with self.ledger.claimed(job_id) as held:
            job, busy = self._claimed_job(job_id, held, "drop")
            if busy:
                return busy
            name = job.chunk.qualified_chunk
            if job.state == JobState.DROPPED:
                return StepResult(job_id, name, "drop", "skipped", "already dropped")
            if job.state != JobState.ARCHIVED:
                return StepResult(job_id, name, "drop", "skipped", f"not archived (state {job.state})")
            stage = DropStage(self.conn, self.ledger, self.dropper, self.check_archive, self.settings,
                              clock=self.clock, progress=self.progress,
                              rearchive=lambda job_id: self.archive(job_id, rearchive=True))
            return stage.drop_claimed(job, started)

    # -- whole run ------------------------------------------------------------------------------
    def runnable_jobs(self, table: str | None = None) -> list[Job]:
        states = [JobState.PLANNED, JobState.FAILED, JobState.ARCHIVING, JobState.ARCHIVED]
        jobs = self.ledger.jobs([str(s) for s in states], limit=1_000_000)
        out = []
        for job in jobs:
            if table and table not in (job.table, job.table_name):
                continue
            if job.state in (JobState.FAILED, JobState.ARCHIVING) and job.attempts >= self.settings.max_attempts:
                if job.state == JobState.ARCHIVING and self.ledger.try_claim(job.id):  # its worker died, again
                    try:
                        self.ledger.mark_failed(job.id, f"the worker died during {job.attempts} attempts; retry by hand",
                                                None)
                    finally:
                        self.ledger.release(job.id)
                continue
            out.append(job)
        return sorted(out, key=lambda j: j.id)

    def process(self, job: Job, *, drop: bool) -> list[StepResult]:
        """Archive then drop one job; an unexpected error fails this job only, never the whole run."""
        try:
            return self._process(job, drop=drop)
        except Exception as error:  # noqa: BLE001 - reported per job
            log.error("job %s: %s", job.id, _first_line(error), extra={"job_id": job.id})
            return [StepResult(job.id, job.chunk.qualified_chunk, "process", "failed", _first_line(error))]

    def _process(self, job: Job, *, drop: bool) -> list[StepResult]:
        results = []
        if job.state != JobState.ARCHIVED:
            result = self.archive(job.id)
            results.append(result)
            if result.outcome == "failed":
                return results
        if drop:
            current = self.ledger.get(job.id)
            if current is not None and current.state == JobState.ARCHIVED:
                results.append(self.drop(job.id))
        return results

    def run(self, *, hypertable: str | None = None, dry_run: bool | None = None, drop: bool = True) -> RunReport:
        """Plan, archive, verify and drop every due chunk."""
        dry = self.settings.dry_run if dry_run is None else dry_run
        entries = self.plan(hypertable)
        report = RunReport(planned=entries, dry_run=dry)
        if dry:
            return report
        self.record_plan(entries)
        jobs = self.runnable_jobs(hypertable)
        self.progress("start", None, {"jobs": len(jobs)})
        lanes = 1 if self.serial else min(self.settings.parallel_chunks, len(jobs))
        if lanes <= 1:
            for job in jobs:
                report.steps.extend(self.process(job, drop=drop))
        else:
            pending, taking = iter(jobs), threading.Lock()

            def work() -> list[StepResult]:
                """One worker (own connections, kept for the run) taking the next job until none is left."""
                results: list[StepResult] = []
                with Engine(self.settings, clock=self.clock, progress=self.progress) as worker:
                    worker._migrated = True
                    while True:
                        with taking:
                            job = next(pending, None)
                        if job is None:
                            return results
                        results.extend(worker.process(job, drop=drop))

            with ThreadPoolExecutor(max_workers=lanes) as pool:
                for results in [pool.submit(work) for _ in range(lanes)]:
                    report.steps.extend(results.result())
            report.steps.sort(key=lambda step: step.job_id)  # stable: each job's steps stay in order
        return report

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per table: hot, due, archived, dropped, failed and blocked counts, oldest unarchived chunk, bytes moved."""
        self._ensure_ledger()
        return table_status(self.plan(), self.ledger.all_jobs(), lambda dirs: tier_bytes(self.lake, dirs))
