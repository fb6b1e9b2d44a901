"""Which chunks are due, hot, skipped or blocked, and why. Pure: the clock and catalog are inputs."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class ChunkKind(StrEnum):
    HYPERTABLE_CHUNK = "chunk"
    PARTITION = "partition"


class Decision(StrEnum):
    DUE = "due"
    HOT = "hot"
    BLOCKED = "blocked"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Chunk:
    """One archivable unit: a TimescaleDB chunk or a leaf range partition."""

    kind: ChunkKind
    table_schema: str
    table_name: str
    chunk_schema: str
    chunk_name: str
    range_start: datetime | int | None
    range_end: datetime | int | None
    is_compressed: bool = False
    integer_time: bool = False

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"

    @property
    def qualified_chunk(self) -> str:
        return f"{self.chunk_schema}.{self.chunk_name}"


@dataclass(frozen=True)
class AggregateGuard:
    """A continuous aggregate on a hypertable: raw data it may still refresh must stay."""

    name: str
    refresh_start: datetime | None  # now() - start_offset; None: the policy refreshes everything
    has_policy: bool
    watermark: datetime | None  # materialized up to here; None: nothing materialized yet


@dataclass(frozen=True)
class TablePolicy:
    """Retention inputs for one table."""

    cutoff: datetime | int | None  # chunks ending at or before this are due
    skip_reason: str | None = None
    guards: list[AggregateGuard] = field(default_factory=list)


@dataclass(frozen=True)
class PlanEntry:
    chunk: Chunk
    decision: Decision
    reason: str = ""


def table_selected(table: str, include: list[str], exclude: list[str]) -> bool:
    """Glob include/exclude on `schema.table`; an empty include list selects everything."""
    if include and not any(fnmatch.fnmatchcase(table, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(table, pattern) for pattern in exclude)


def cutoff_for(table: str, now: datetime, retention_days: int, overrides: dict[str, int]) -> datetime:
    """now - the table's retention (its override, else the default)."""
    days = overrides.get(table, overrides.get(table.split(".", 1)[-1], retention_days))
    return now - timedelta(days=days)


def _blocked_by(chunk: Chunk, guards: list[AggregateGuard]) -> str | None:
    end = chunk.range_end
    if not isinstance(end, datetime):
        if guards:  # integer refresh windows are not evaluated: keep the raw data rather than guess
            return f"continuous aggregate {guards[0].name} on an integer-time hypertable: its refresh window is not checked"
        return None
    for guard in guards:
        if guard.has_policy and guard.refresh_start is None:
            return f"continuous aggregate {guard.name} refreshes its whole range (no start_offset)"
        if guard.refresh_start is not None and end > guard.refresh_start:
            return (
                f"overlaps the refresh window of continuous aggregate {guard.name} "
                f"(refreshes from {guard.refresh_start.isoformat()})"
            )
        if guard.watermark is None or end > guard.watermark:
            mark = guard.watermark.isoformat() if guard.watermark else "nothing materialized"
            return f"above the watermark of continuous aggregate {guard.name} ({mark})"
    return None


def decide(chunk: Chunk, policy: TablePolicy) -> PlanEntry:
    """Classify one chunk."""
    if policy.skip_reason:
        return PlanEntry(chunk, Decision.SKIPPED, policy.skip_reason)
    end = chunk.range_end
    if end is None:
        return PlanEntry(chunk, Decision.SKIPPED, "open-ended range (MAXVALUE or DEFAULT) is never archived")
    cutoff = policy.cutoff
    if cutoff is None or type(end) is not type(cutoff) and not (isinstance(end, datetime) and isinstance(cutoff, datetime)):
        return PlanEntry(chunk, Decision.SKIPPED, "no cutoff applies to this chunk's time type")
    if end > cutoff:  # type: ignore[operator]
        return PlanEntry(chunk, Decision.HOT, "")
    reason = _blocked_by(chunk, policy.guards)
    if reason:
        return PlanEntry(chunk, Decision.BLOCKED, reason)
    return PlanEntry(chunk, Decision.DUE, "")


def plan(chunks: list[Chunk], policies: dict[str, TablePolicy]) -> list[PlanEntry]:
    """Classify every chunk, oldest first."""
    entries = [decide(chunk, policies[chunk.table]) for chunk in chunks if chunk.table in policies]

    def order(entry: PlanEntry) -> tuple:
        start = entry.chunk.range_start
        key = start.timestamp() if isinstance(start, datetime) else (start if isinstance(start, int) else float("-inf"))
        return (entry.chunk.table, key, entry.chunk.chunk_name)

    return sorted(entries, key=order)
