"""Bringing a range's archived files back online from the Archive tier before a restore, query or verify."""

from __future__ import annotations

from typing import Any

from .bounds import Bound, iso
from .context import HasRestoreContext, RestoreContext, as_context
from .selection import job_files, jobs_for


def rehydrate_range(engine: RestoreContext | HasRestoreContext, table: str, start: Bound, end: Bound, *,
                    tier: str = "Hot", priority: str = "Standard") -> dict[str, Any]:
    """Start bringing back online every file a restore of [start, end) reads: the chunks' data files and manifests,
    and the table's Delta log if a rule took it offline. Idempotent: run again, it counts pending and ready files."""
    ctx = as_context(engine)
    jobs = jobs_for(ctx, table, start, end)
    files = [path for job in jobs for path in job_files(job)]
    for table_path in sorted({job.table_path for job in jobs if job.table_path}):
        files += ctx.lake.list_files(f"{table_path}/_delta_log")
    counts = {"requested": 0, "pending": 0, "online": 0}  # requested: started now; pending + online = every file
    unique = list(dict.fromkeys(files))
    for path in unique:
        started, online = ctx.lake.rehydrate(path, tier, priority)
        counts["requested"] += started
        counts["online" if online else "pending"] += 1
    waiting = counts["pending"]
    return {"table": table, "range_from": iso(start), "range_to": iso(end), "tier": tier, "priority": priority,
            "chunks": len(jobs), "files": len(unique), **counts,
            "ready": waiting == 0,
            "note": "every file is online: restore, query and verify can read them" if waiting == 0 else
                    "rehydration takes up to 15 hours at Standard priority (about 1 hour at High); run this again "
                    "to see how many are still pending"}
