"""The proof: the target read back as the archive's Arrow types, counted and row-hashed (row_hash.py)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import psycopg

from ..database import catalog
from ..database.extract import query_batches
from ..ledger.jobs import Job
from ..read_ahead import ReadAhead
from ..typemap import ColumnPlan, plan_columns, text_companion
from .bounds import TimeFilter
from .context import RestoreContext
from .selection import Columns, lake_batches

if TYPE_CHECKING:
    from ..row_hash import RowSetHash

_READBACK_BATCH = 4 << 20  # bytes per Arrow batch read back for the proof: memory stays flat whatever the chunk size
_READ_AHEAD = 1  # batches decoded ahead of the hashing


def readback_plans(conn: psycopg.Connection, schema: str, name: str, columns: Columns,
                   companions: set[str]) -> list[ColumnPlan]:
    """How to read the target's archived columns back as the archive wrote them."""
    wanted = {c["name"] for c in columns}
    source = [c for c in catalog.source_columns(conn, schema, name) if c.name in wanted]
    names = [c["name"] for c in columns]
    plans = plan_columns(source, unsupported_as_text=True)  # what was archived as text reads back as text
    return [dataclasses.replace(p, text_companion=text_companion(p.name, names)) if p.name in companions else p
            for p in plans]


def target_hash(cursor: Any, rel: str, plans: list[ColumnPlan], rows: TimeFilter | None,
                words: list | None = None) -> RowSetHash:
    """Count and order-independent row hash of the target's rows in [rows); each batch's row words into `words`."""
    from ..row_hash import RowSetHash

    hashed = RowSetHash()
    # ADBC decodes the next batch on a worker thread while this one is hashed (both release the GIL)
    batches = ReadAhead([query_batches(cursor, rel, plans, rows.where() if rows else "",
                                        batch_size_bytes=_READBACK_BATCH)], _READ_AHEAD, name="tsarchive-readback")
    try:
        for batch in batches:
            hashed.update(batch)
            if words is not None:
                words.append(hashed.row_words(batch))
    finally:
        batches.close()  # the cursor is used again next: its reader thread must be gone
    return hashed


def count_present(ctx: RestoreContext, job: Job, rows: TimeFilter | None, held: list) -> tuple[int, int]:
    """(lake rows whose row hash the target holds, lake rows) for one job; `held` are the target's row words."""
    import numpy as np

    from ..row_hash import RowSetHash

    existing = np.concatenate(held) if held else np.zeros(0, dtype=np.uint64)
    found = total = 0
    for batch in lake_batches(ctx, job, rows):
        if len(existing):
            found += int(np.isin(RowSetHash().row_words(batch), existing).sum())
        total += batch.num_rows
    return found, total
