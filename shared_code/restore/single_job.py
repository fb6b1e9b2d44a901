"""`tsarchive restore JOB`: one job's rows into a new table, published only once they are proven equal to the archive."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ..database import catalog
from ..database import connection as db
from ..errors import ArchiverError, JobStateError
from ..ledger.jobs import JobState
from .context import HasRestoreContext, Progress, RestoreContext, as_context, guarded
from .loading import restore_chunk
from .selection import checked, refuse_offline
from .target import COMMENT_PREFIX, create_table, default_target, made_by_restore, split_target


@dataclass
class RestoreResult:
    job_id: int
    target: str
    rows: int
    verified: bool
    content_hash: str
    expected_hash: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def restore(engine: RestoreContext | HasRestoreContext, job_id: int, target: str | None = None, replace: bool = False,
            progress: Progress | None = None) -> RestoreResult:
    """Restore one job's rows into a new table; publish it only once its rows are proven equal to the archive."""
    ctx = as_context(engine)
    return guarded(f"restore of job {job_id}", lambda: _restore_job(ctx, job_id, target, replace, progress))


def _restore_job(ctx: RestoreContext, job_id: int, target: str | None, replace: bool,
                 progress: Progress | None) -> RestoreResult:
    started = time.monotonic()
    job = ctx.ledger.get(job_id)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist; `tsarchive jobs --state dropped` lists restorable jobs")
    if job.state in (JobState.ARCHIVED, JobState.DROPPED):
        refuse_offline(ctx, job)
    manifest, columns = checked(ctx, job)
    schema, name = split_target(target) if target else default_target(manifest)
    existing = catalog.describe_table(ctx.conn, schema, name)
    if existing is not None:
        if not replace:
            raise ArchiverError(f"{schema}.{name} already exists; pass --replace to overwrite it or --target to choose another")
        if not made_by_restore(existing):
            raise ArchiverError(f"{schema}.{name} was not created by `tsarchive restore`; --replace only overwrites "
                                "tables restore created. Choose another --target.")
    loading = f"{name[:40]}__loading_{job_id}"
    ctx.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
    comment = f"{COMMENT_PREFIX} of job {job_id} ({manifest.chunk_schema}.{manifest.chunk_name})"
    create_table(ctx, schema, loading, columns, comment)
    try:
        outcome = restore_chunk(ctx, job, columns, (schema, loading), None, allow_duplicates=False,
                                progress=progress or (lambda *_: None))
    except BaseException:
        ctx.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
        raise
    with ctx.conn.transaction():  # publish: the old table (if replacing) and the new one swap atomically
        ctx.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, name)))
        ctx.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(db.relation(schema, loading), sql.Identifier(name)))
    return RestoreResult(job_id=job_id, target=f"{schema}.{name}", rows=outcome.rows, verified=True,
                         content_hash=outcome.row_hash, expected_hash=manifest.content_hash,
                         seconds=time.monotonic() - started)
