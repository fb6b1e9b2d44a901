"""Status and reporting: per-table counts from the plan and the ledger, and the lake's bytes per access tier."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import render_error
from .ledger.jobs import Job, JobState
from .planning import Decision, PlanEntry
from .storage.lake import Lake

log = logging.getLogger("tsarchive")


def table_status(entries: list[PlanEntry], jobs: list[Job],
                 tier_bytes_of: Callable[[list[str]], dict[str, int] | None]) -> list[dict[str, Any]]:
    """Per table: hot, due, archived, dropped, failed and blocked counts, oldest unarchived chunk, bytes moved, and
    the bytes per access tier `tier_bytes_of` reports for its table folders."""
    tables: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        return tables.setdefault(name, {"table": name, "hot": 0, "due": 0, "archived": 0, "dropped": 0,
                                        "failed": 0, "blocked": 0, "skipped": 0, "oldest_unarchived": None,
                                        "rows_archived": 0, "bytes_archived": 0, "skip_reason": None})

    live = {(j.chunk_schema, j.chunk_name): j for j in jobs if j.state != JobState.DROPPED}
    for entry in entries:
        r = row(entry.chunk.table)
        job = live.get((entry.chunk.chunk_schema, entry.chunk.chunk_name))
        if entry.decision == Decision.HOT:
            r["hot"] += 1
        elif entry.decision == Decision.SKIPPED:
            r["skipped"] += 1
            r["skip_reason"] = entry.reason
        elif entry.decision == Decision.BLOCKED:
            r["blocked"] += 1
        elif job is None or job.state in (JobState.PLANNED, JobState.ARCHIVING):
            r["due"] += 1
        if entry.decision in (Decision.DUE, Decision.BLOCKED) and (job is None or job.state != JobState.ARCHIVED):
            start = entry.chunk.range_start
            shown = start.isoformat() if isinstance(start, datetime) else start
            if r["oldest_unarchived"] is None:
                r["oldest_unarchived"] = {"chunk": entry.chunk.qualified_chunk, "range_start": shown}
    for job in jobs:
        r = row(job.table)
        if job.state == JobState.ARCHIVED:
            r["archived"] += 1
        elif job.state == JobState.DROPPED:
            r["dropped"] += 1
        elif job.state == JobState.FAILED:
            r["failed"] += 1
        if job.state in (JobState.ARCHIVED, JobState.DROPPED):
            r["rows_archived"] += job.row_count or 0
            r["bytes_archived"] += job.byte_count or 0
            r.setdefault("_dirs", set()).add(job.table_path)
    for r in tables.values():
        r["bytes_by_tier"] = tier_bytes_of(sorted(d for d in r.pop("_dirs", set()) if d))
    return sorted(tables.values(), key=lambda r: r["table"])


def tier_bytes(lake: Lake, table_dirs: list[str]) -> dict[str, int] | None:
    """What the lake holds per access tier for these table folders (data, log, manifests); None if unlistable."""
    totals: dict[str, int] = {}
    try:
        for folder in table_dirs:
            for tier, size in lake.tier_bytes(folder).items():
                totals[tier] = totals.get(tier, 0) + size
    except Exception as error:  # noqa: BLE001 - status must answer even when the lake cannot be listed
        log.warning("status: cannot list the lake's access tiers: %s", render_error(error))
        return None
    return totals
