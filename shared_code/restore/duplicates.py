"""Duplicate refusal: before anything is written, whether the target already holds any of the archived rows."""

from __future__ import annotations

from ..database import connection as db
from ..errors import RestoreRefused
from ..ledger.jobs import Job
from .bounds import TimeFilter
from .context import RestoreContext
from .proof import count_present, readback_plans, target_hash
from .selection import Columns, lake_companions


def refuse_duplicates(ctx: RestoreContext, schema: str, name: str, checked: list[tuple[Job, Columns]],
                      rows: TimeFilter, skip_present: bool) -> set[int]:
    """Refuse if the target holds any archived row; with skip_present, the jobs wholly there (to skip)."""
    rel = db.relation_sql(schema, name)
    full, partial = [], []
    with ctx.row_connection() as conn:
        cursor = conn.cursor()
        try:
            for job, columns in checked:
                chunk_rows = rows.narrowed(job.range_start, job.range_end)
                cursor.execute(f"SELECT count(*) FROM {rel}{chunk_rows.where()}")
                if not cursor.fetchone()[0]:
                    continue
                names = [c["name"] for c in columns]
                plans = readback_plans(ctx.conn, schema, name, columns, lake_companions(ctx, job, names))
                held: list = []
                target_hash(cursor, rel, plans, chunk_rows, held)
                found, total = count_present(ctx, job, rows, held)
                if found:
                    (full if found >= total else partial).append((job, found, total))
        finally:
            cursor.close()
    if partial or (full and not skip_present):
        lines = [f"{job.chunk_name} (job {job.id}): {found} of {total} rows" for job, found, total in full + partial]
        hint = " or --skip-present to skip the chunks already wholly there" if full and not partial else ""
        raise RestoreRefused(f"{schema}.{name} already holds archived rows: {'; '.join(lines)}. The chunks are still "
                             "there, or were restored before. Nothing was restored; pass --allow-duplicates to insert "
                             f"them anyway{hint}.")
    return {job.id for job, _, _ in full}


def refuse_present_rows(ctx: RestoreContext, job: Job, rows: TimeFilter | None, held: list, target: str) -> None:
    """Inside the load's transaction: refuse the chunk if the locked target holds any of its rows."""
    found, total = count_present(ctx, job, rows, held)
    if found:
        raise RestoreRefused(
            f"{target} already holds {found} of the {total} archived rows of {job.chunk_name} (job {job.id}): the "
            "chunk is still there, or was restored before. Not restoring it; pass --allow-duplicates to insert them "
            "anyway.")
