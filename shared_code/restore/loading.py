"""One chunk into one table: stage its rows, then in one transaction lock the target, insert, read back, compare.

The transaction commits only if the rows read back from the target add exactly the archive's count and row hash.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from ..database import connection as db
from ..errors import VerificationError
from ..ledger.jobs import Job
from ..typemap import quote_ident, text_companion
from .bounds import TimeFilter
from .context import Progress, RestoreContext
from .duplicates import refuse_present_rows
from .proof import readback_plans, target_hash
from .selection import Columns, lake_batches
from .staging import select_exprs, stage
from .target import RESTORE_SCHEMA


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
    """Stage the chunk's rows, then in one transaction: lock the target, insert, read back, compare, commit."""
    from ..row_hash import RowSetHash

    started = time.monotonic()
    rel = db.relation_sql(*target)
    stage_name = f"__stage_{job.id}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}_{int(time.time() * 1000) % 10**9}"
    lake_hash = RowSetHash()
    names = [c["name"] for c in columns]
    db.ensure_schema(ctx.conn, RESTORE_SCHEMA)
    with ctx.row_connection() as conn:
        cursor = conn.cursor()
        try:
            staged = stage(cursor, lake_batches(ctx, job, rows), stage_name, lake_hash, progress, job,
                           serial=ctx.serial)
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
                    refuse_present_rows(ctx, job, rows, held, lake_hash.rows, f"{target[0]}.{target[1]}")
                cursor.execute(f"INSERT INTO {rel} ({', '.join(quote_ident(n) for n in names)}) "
                               f"SELECT {select_exprs(columns, staged)} FROM {db.relation_sql(RESTORE_SCHEMA, stage_name)} s")
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
            cursor.execute(f"DROP TABLE IF EXISTS {db.relation_sql(RESTORE_SCHEMA, stage_name)}")
            cursor.close()
    return ChunkRestore(job.id, job.chunk_name, lake_hash.rows, job.byte_count or 0, "restored", lake_hash.hexdigest,
                        time.monotonic() - started)
