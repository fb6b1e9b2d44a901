"""What a step reports: one job's step outcome, a whole run, and the plan rows the CLI and HTTP show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .planning import PlanEntry

if TYPE_CHECKING:
    from .ledger.jobs import Job

Clock = Callable[[], datetime]
Progress = Callable[[str, "Job | None", dict[str, Any]], None]  # an event name, the job, details


@dataclass
class StepResult:
    """Outcome of one step on one job."""

    job_id: int
    chunk: str
    step: str
    outcome: str  # done | skipped | failed
    detail: str = ""
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunReport:
    planned: list[PlanEntry] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "plan": [plan_entry_dict(e) for e in self.planned],
            "steps": [s.as_dict() for s in self.steps],
            "failed": len(self.failed),
            "rows": sum(s.rows for s in self.steps if s.step == "archive" and s.outcome == "done"),
            "bytes": sum(s.bytes for s in self.steps if s.step == "archive" and s.outcome == "done"),
        }


def plan_entry_dict(entry: PlanEntry) -> dict[str, Any]:
    c = entry.chunk
    iso = lambda v: v.isoformat() if isinstance(v, datetime) else v  # noqa: E731
    return {
        "table": c.table, "chunk": c.qualified_chunk, "kind": str(c.kind), "range_start": iso(c.range_start),
        "range_end": iso(c.range_end), "compressed": c.is_compressed, "decision": str(entry.decision),
        "reason": entry.reason,
    }


def rehydrate_command(table: str, start: object, end: object) -> str:
    """The command that brings a range's offline files back online."""
    bound = lambda v: v.isoformat() if isinstance(v, datetime) else str(v)  # noqa: E731
    return f"tsarchive rehydrate --hypertable {table} --from {bound(start)} --to {bound(end)}"
