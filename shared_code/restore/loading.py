"""One chunk into one table: in one transaction lock the target, load the chunk's rows, read back, compare.

The rows go in straight from the lake where no column needs a cast back (direct.py), else from a staging table with
the casts. The transaction commits only if the rows read back from the target add exactly the archive's count and row
hash.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..database import connection as db
from ..errors import VerificationError
from ..ledger.jobs import Job
from ..read_ahead import read_ahead
from ..typemap import quote_ident, text_companion
from . import direct
from .bounds import TimeFilter
from .context import Progress, RestoreContext
from .duplicates import refuse_present_rows
from .proof import readback_plans, target_hash
from .selection import Columns, lake_batches
from .staging import select_exprs, stage
from .target import RESTORE_SCHEMA

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("tsarchive")
_LAKE_AHEAD = 4  # lake batches (65,536 rows each) ready ahead of the COPY into the target


@dataclass
class ChunkRestore:
    job_id: int
    chunk: str
    rows: int
    bytes: int
    status: str  # restored | planned | present | empty | offline
    row_hash: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def restore_chunk(ctx: RestoreContext, job: Job, columns: Columns, target: tuple[str, str],
                  rows: TimeFilter | None, *, allow_duplicates: bool, progress: Progress) -> ChunkRestore:
    """One chunk into the target, in one transaction: lock it, load, read back, compare, commit. Straight from the
    lake where no column needs a cast back (direct.py); through a staging table otherwise."""
    started = time.monotonic()
    if not ctx.serial and direct.qualifies(columns):
        try:
            return _restore(ctx, job, columns, target, rows, allow_duplicates, progress, started, straight=True)
        except direct.NeedsStaging as reason:
            log.info("restore of job %s goes through staging: %s", job.id, reason, extra={"job_id": job.id})
    return _restore(ctx, job, columns, target, rows, allow_duplicates, progress, started, straight=False)


def _restore(ctx: RestoreContext, job: Job, columns: Columns, target: tuple[str, str], rows: TimeFilter | None,
             allow_duplicates: bool, progress: Progress, started: float, *, straight: bool) -> ChunkRestore:
    from ..row_hash import RowSetHash

    rel = db.relation_sql(*target)
    lake_hash = RowSetHash()
    names = [c["name"] for c in columns]
    staging = None if straight else \
        f"__stage_{job.id}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}_{int(time.time() * 1000) % 10**9}"
    with ctx.row_connection() as conn:
        cursor = conn.cursor()
        try:
            staged: dict[str, str] = {}
            if staging:
                db.ensure_schema(ctx.conn, RESTORE_SCHEMA)
                staged = stage(cursor, lake_batches(ctx, job, rows), staging, lake_hash, progress, job, serial=ctx.serial)
                if not lake_hash.rows:
                    return ChunkRestore(job.id, job.chunk_name, 0, 0, "empty", lake_hash.hexdigest,
                                        time.monotonic() - started)
            companions = {n for n in names if text_companion(n, names) in staged}
            plans = readback_plans(ctx.conn, *target, columns, companions)
            chunk_rows = rows.narrowed(job.range_start, job.range_end) if rows else None
            cursor.execute("BEGIN")
            try:
                cursor.execute(f"SET LOCAL lock_timeout = '{int(ctx.lock_timeout_ms)}ms'")
                cursor.execute(f"LOCK TABLE {rel} IN SHARE ROW EXCLUSIVE MODE")  # writers wait; readers go on
                held: list = []
                before = target_hash(cursor, rel, plans, chunk_rows, held)
                if before.rows and not allow_duplicates:
                    refuse_present_rows(ctx, job, rows, held, f"{target[0]}.{target[1]}")
                if staging:
                    cursor.execute(f"INSERT INTO {rel} ({', '.join(quote_ident(n) for n in names)}) "
                                   f"SELECT {select_exprs(columns, staged)} FROM {db.relation_sql(RESTORE_SCHEMA, staging)} s")
                elif not _load_straight(cursor, ctx, job, columns, target, rows, lake_hash, progress):
                    cursor.execute("ROLLBACK")
                    return ChunkRestore(job.id, job.chunk_name, 0, 0, "empty", lake_hash.hexdigest,
                                        time.monotonic() - started)
                added = target_hash(cursor, rel, plans, chunk_rows) - before
                if added != lake_hash:
                    raise VerificationError(
                        f"chunk {job.chunk_name} (job {job.id}): the rows restored into {target[0]}.{target[1]} differ "
                        f"from the archive ({added.rows} rows, hash {added.hexdigest}; archived {lake_hash.rows} "
                        f"rows, hash {lake_hash.hexdigest}). Rolled back: nothing of this chunk was kept.")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        finally:
            if staging:
                cursor.execute(f"DROP TABLE IF EXISTS {db.relation_sql(RESTORE_SCHEMA, staging)}")
            cursor.close()
    return ChunkRestore(job.id, job.chunk_name, lake_hash.rows, job.byte_count or 0, "restored", lake_hash.hexdigest,
                        time.monotonic() - started)


def _load_straight(cursor: Any, ctx: RestoreContext, job: Job, columns: Columns, target: tuple[str, str],
                   rows: TimeFilter | None, lake_hash: Any, progress: Progress) -> bool:
    """COPY the lake's rows into the target inside the caller's transaction; False if the range holds none."""
    import pyarrow as pa

    stopped: list[direct.NeedsStaging] = []

    def reported() -> Iterator[pa.RecordBatch]:
        # the lake is read, hashed and converted on a worker thread while ADBC sends the previous batches
        ahead = read_ahead([direct.direct_batches(lake_batches(ctx, job, rows), columns, lake_hash)], _LAKE_AHEAD,
                           name="tsarchive-lake-feed")
        try:
            for batch in ahead:
                progress("rows", {"job_id": job.id, "rows": batch.num_rows})
                yield batch
        except direct.NeedsStaging as reason:  # ADBC turns it into its own error: keep it to say why
            stopped.append(reason)
            raise
        finally:
            ahead.close()

    feed = reported()
    try:
        first, batches = direct.first_batch(feed)
        if first is None:
            return False
        try:
            cursor.ingest(target[1], pa.RecordBatchReader.from_batches(first.schema, batches), schema=target[0],
                          create=False)
        except Exception:
            if stopped:
                raise stopped[0] from None
            raise
        return True
    finally:
        feed.close()  # ends the lake thread even if ADBC stopped reading part-way
