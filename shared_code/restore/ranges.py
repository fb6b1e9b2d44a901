"""`tsarchive restore --hypertable T --from A --to B`: every archived row of a time range, into any table, proven.

The CLI, the HTTP route (via the queued request) and the archiver's queue handler all call `restore_range`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..database import catalog
from ..errors import ArchiverError, RestoreRefused
from ..ledger.jobs import Job
from ..results import rehydrate_command
from ..storage.blob import offline_summary
from .bounds import Bound, TimeFilter, iso, range_name
from .context import HasRestoreContext, Progress, RestoreContext, as_context, guarded
from .duplicates import refuse_duplicates
from .loading import ChunkRestore, LakeFeed, restore_chunk
from .selection import checked, jobs_for, lake_batches, offline_files, union_columns
from .target import COMMENT_PREFIX, RESTORE_SCHEMA, check_existing, create_table, split_target

log = logging.getLogger("tsarchive")


@dataclass
class RangeRestoreResult:
    """What went where, with each chunk's proof."""

    table: str
    target: str
    range_from: str | None
    range_to: str | None
    dry_run: bool
    created_target: bool = False
    chunks: list[ChunkRestore] = field(default_factory=list)
    seconds: float = 0.0
    must_rehydrate: dict[str, Any] | None = None  # offline files the range needs: {files, bytes, command}

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks if c.status in ("restored", "planned", "offline"))

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "chunks"}
        out["rows"] = self.rows
        out["chunks"] = [c.as_dict() for c in self.chunks]
        return out


def restore_range(engine: RestoreContext | HasRestoreContext, table: str, start: Bound, end: Bound, *,
                  into: str | None = None, dry_run: bool = False, allow_duplicates: bool = False,
                  skip_present: bool = False, progress: Progress | None = None) -> RangeRestoreResult:
    """Every archived row of `table` whose time is in [start, end), into `into` (or a new staging table), proven."""
    ctx = as_context(engine)
    return guarded(f"restore of {table}", lambda: _restore_range(
        ctx, table, start, end, into, dry_run, allow_duplicates, skip_present, progress or (lambda *_: None)))


def _restore_range(ctx: RestoreContext, table: str, start: Bound, end: Bound, into: str | None, dry_run: bool,
                   allow_duplicates: bool, skip_present: bool, progress: Progress) -> RangeRestoreResult:
    started = time.monotonic()
    if start is not None and end is not None and type(start) is type(end) and start >= end:  # type: ignore[operator]
        raise ArchiverError("--from must be before --to")
    source = split_target(table, "--hypertable")
    jobs = jobs_for(ctx, table, start, end)
    try:
        time_name, time_type = catalog.time_column(ctx.conn, str(jobs[0].kind), *source)
    except (ArchiverError, psycopg.Error):
        raise ArchiverError(f"cannot find the time column of {table}: a range restore reads it from the table. If the "
                            "table is gone, restore each job with `tsarchive restore JOB`.") from None
    rows = TimeFilter.for_range(time_name, time_type, start, end)
    jobs = [j for j in jobs if not rows.narrowed(j.range_start, j.range_end).empty]
    offline = offline_files(ctx, jobs)
    if any(offline.values()):  # before anything is read or written: nothing can be proven from files not online
        return _offline_answer(table, start, end, into, dry_run, jobs, offline, started)
    proven = [(job, checked(ctx, job)[1]) for job in jobs]  # every file's SHA-256 and the manifest, before anything
    columns = union_columns(proven)
    schema, name = split_target(into, "--into") if into else (RESTORE_SCHEMA, range_name(table, start, end))
    exists = check_existing(ctx, schema, name, columns, chosen=bool(into))
    result = RangeRestoreResult(table=table, target=f"{schema}.{name}", dry_run=dry_run,
                                range_from=iso(start), range_to=iso(end), created_target=not exists)
    if dry_run:
        for job, _ in proven:
            count = sum(b.num_rows for b in lake_batches(ctx, job, rows, [time_name]))
            result.chunks.append(ChunkRestore(job.id, job.chunk_name, count, job.byte_count or 0, "planned"))
        result.seconds = time.monotonic() - started
        return result
    skip: set[int] = set()
    if exists and not allow_duplicates:
        skip = refuse_duplicates(ctx, schema, name, proven, rows, skip_present)
    if not exists:
        create_table(ctx, schema, name, columns, f"{COMMENT_PREFIX} of {table} [{iso(start)}, {iso(end)})")
    todo = [(job, job_columns) for job, job_columns in proven if job.id not in skip]
    after = {job.id: todo[i + 1] for i, (job, _) in enumerate(todo[:-1])}  # each chunk's successor to load
    feeds: dict[int, LakeFeed | None] = {}  # the next chunk's lake feed, started while this chunk's proof runs

    def start_next(job_id: int) -> None:
        if job_id in after and after[job_id][0].id not in feeds:
            following, following_columns = after[job_id]
            feeds[following.id] = LakeFeed.start(ctx, following, following_columns, rows)

    try:
        for job, job_columns in proven:
            if job.id in skip:
                result.chunks.append(ChunkRestore(job.id, job.chunk_name, 0, 0, "present"))
                continue
            progress("chunk", {"job_id": job.id, "chunk": job.chunk_name, "rows": job.row_count or 0})
            outcome = restore_chunk(ctx, job, job_columns, (schema, name), rows, allow_duplicates=allow_duplicates,
                                    progress=progress, feed=feeds.pop(job.id, None),
                                    loaded=lambda job_id=job.id: start_next(job_id))
            result.chunks.append(outcome)
            progress("chunk_done", outcome.as_dict())
            log.info("restore %s: %s %s rows of %s (job %s) into %s.%s in %.2f s, row hash %s", table, outcome.status,
                     outcome.rows, job.chunk_name, job.id, schema, name, outcome.seconds, outcome.row_hash)
    finally:
        for feed in feeds.values():  # a chunk failed: the next one's feed stops unread
            if feed is not None:
                feed.close()
    result.seconds = time.monotonic() - started
    return result


def _offline_answer(table: str, start: Bound, end: Bound, into: str | None, dry_run: bool, jobs: list[Job],
                    offline: dict[int, list], started: float) -> RangeRestoreResult:
    """Some files the range needs are offline: refused, or (dry run) what must be rehydrated first."""
    files = [f for found in offline.values() for f in found]
    command = rehydrate_command(table, start, end)
    if not dry_run:
        raise RestoreRefused(f"{offline_summary(files)}: {table} in [{iso(start)}, {iso(end)}) needs them "
                             f"online; nothing was restored. Bring them back with: {command} (up to 15 hours at "
                             "standard priority), then run this restore again")
    result = RangeRestoreResult(table=table, target=into or "", dry_run=True, range_from=iso(start), range_to=iso(end),
                                must_rehydrate={"files": len(files), "bytes": sum(f.bytes for f in files),
                                                "command": command})
    for job in jobs:
        result.chunks.append(ChunkRestore(job.id, job.chunk_name, job.row_count or 0, job.byte_count or 0,
                                          "offline" if offline[job.id] else "planned"))
    result.seconds = time.monotonic() - started
    return result


def restore_estimate(engine: RestoreContext | HasRestoreContext, table: str, start: Bound, end: Bound
                     ) -> dict[str, Any]:
    """What a restore of [start, end) would touch, from the ledger alone (no file is read): fast enough for an HTTP
    answer at any range. Rows are exact for chunks wholly inside the range, an upper bound for the two at its ends;
    `tsarchive restore --dry-run` (or the queued restore itself) checks every file and counts exactly."""
    jobs = jobs_for(as_context(engine), table, start, end)
    chunks = []
    for job in jobs:
        inside = (start is None or (job.range_start is not None and job.range_start >= start)) and \
                 (end is None or (job.range_end is not None and job.range_end <= end))  # type: ignore[operator]
        chunks.append({"job_id": job.id, "chunk": job.chunk_name, "rows": job.row_count or 0,
                       "rows_exact": bool(inside), "bytes": job.byte_count or 0, "state": str(job.state)})
    return {"table": table, "range_from": iso(start), "range_to": iso(end), "dry_run": True, "estimate": True,
            "chunks": chunks, "rows_at_most": sum(c["rows"] for c in chunks),
            "bytes": sum(c["bytes"] for c in chunks),
            "note": "from the ledger; files are checked and rows counted exactly when the restore runs"}
