"""One chunk into one table: in one transaction lock the target, load the chunk's rows, read back, compare.

The rows go in straight from the lake where no column needs a cast back (direct.py), else from a staging table with
the casts. The transaction commits only if the rows read back from the target add exactly the archive's count and row
hash.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..database import connection as db
from ..errors import VerificationError
from ..ledger.jobs import Job
from ..read_ahead import ReadAhead
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
_LAKE_AHEAD = 2  # lake batches (65,536 rows each) ready ahead of the COPY into the target


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
                  rows: TimeFilter | None, *, allow_duplicates: bool, progress: Progress,
                  feed: LakeFeed | None = None, loaded: Callable[[], None] | None = None) -> ChunkRestore:
    """One chunk into the target, in one transaction: lock it, load, read back, compare, commit. Straight from the
    lake where no column needs a cast back (direct.py), from `feed` if the caller started it; through a staging table
    otherwise. `loaded` is called once the rows are in and the read-back proof begins (the caller starts the next
    chunk's feed then, so its lake reading overlaps this proof)."""
    started = time.monotonic()
    feed = feed or LakeFeed.start(ctx, job, columns, rows)
    if feed is not None:
        try:
            return _restore(ctx, job, columns, target, rows, allow_duplicates, progress, started, feed, loaded)
        except direct.NeedsStaging as reason:
            log.info("restore of job %s goes through staging: %s", job.id, reason, extra={"job_id": job.id})
        finally:
            feed.close()
    return _restore(ctx, job, columns, target, rows, allow_duplicates, progress, started, None, loaded)


class LakeFeed:
    """A chunk's lake rows in [rows) as the direct COPY takes them, hashed as archived, read on a worker thread a few
    batches ahead (bounded memory) from `start` on."""

    def __init__(self, ctx: RestoreContext, job: Job, columns: Columns, rows: TimeFilter | None) -> None:
        from ..row_hash import RowSetHash

        self.job_id = job.id
        self.hash = RowSetHash()
        self._batches = ReadAhead([direct.direct_batches(lake_batches(ctx, job, rows), columns, self.hash)],
                                  _LAKE_AHEAD, name="tsarchive-lake-feed")

    @classmethod
    def start(cls, ctx: RestoreContext, job: Job, columns: Columns, rows: TimeFilter | None) -> LakeFeed | None:
        """The job's feed, reading from now on; None where the rows must go through staging (a cast back, or one
        connection at a time)."""
        return cls(ctx, job, columns, rows) if not ctx.serial and direct.qualifies(columns) else None

    def batches(self, progress: Progress) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            progress("rows", {"job_id": self.job_id, "rows": batch.num_rows})
            yield batch

    def close(self) -> None:
        self._batches.close()


def _restore(ctx: RestoreContext, job: Job, columns: Columns, target: tuple[str, str], rows: TimeFilter | None,
             allow_duplicates: bool, progress: Progress, started: float, feed: LakeFeed | None,
             loaded: Callable[[], None] | None) -> ChunkRestore:
    from ..row_hash import RowSetHash

    rel = db.relation_sql(*target)
    lake_hash = feed.hash if feed else RowSetHash()
    names = [c["name"] for c in columns]
    staging = None if feed else \
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
                elif feed and not _load_straight(cursor, target, feed, progress):
                    cursor.execute("ROLLBACK")
                    return ChunkRestore(job.id, job.chunk_name, 0, 0, "empty", lake_hash.hexdigest,
                                        time.monotonic() - started)
                if loaded:
                    loaded()
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


def _load_straight(cursor: Any, target: tuple[str, str], feed: LakeFeed, progress: Progress) -> bool:
    """COPY the feed's rows into the target inside the caller's transaction; False if the range holds none."""

    first, batches = direct.first_batch(feed.batches(progress))
    if first is None:
        return False
    cursor.ingest(target[1], first.schema, batches, schema=target[0], create=False)
    return True
