"""The time range of a restore: parsing --from/--to, the row filter in the column's own units, names for ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import ArchiverError
from ..ledger.jobs import Job
from ..typemap import quote_ident

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet

Bound = datetime | int | None
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER_TYPES = {"smallint", "integer", "bigint"}


@dataclass(frozen=True)
class TimeFilter:
    """Rows whose time column is in [low, high), in the column's stored units (micros, days or integers)."""

    column: str
    pg_type: str  # format_type() of the time column
    low: int | None = None
    high: int | None = None

    @classmethod
    def for_range(cls, column: str, pg_type: str, start: Bound, end: Bound) -> TimeFilter:
        return cls(column, pg_type, _units(pg_type, start), _units(pg_type, end))

    def narrowed(self, start: Bound, end: Bound) -> TimeFilter:
        """The intersection with a chunk's range."""
        low, high = _units(self.pg_type, start), _units(self.pg_type, end)
        return TimeFilter(self.column, self.pg_type,
                          low if self.low is None else self.low if low is None else max(low, self.low),
                          high if self.high is None else self.high if high is None else min(high, self.high))

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.low is None and self.high is None:
            return batch
        column = batch.column(self.column)
        if pa.types.is_timestamp(column.type):
            column = column.view(pa.int64())
        elif pa.types.is_date32(column.type):
            column = column.view(pa.int32())
        mask = None
        for bound, test in ((self.low, pc.greater_equal), (self.high, pc.less)):
            if bound is not None:
                part = test(column, pa.scalar(bound, column.type))
                mask = part if mask is None else pc.and_(mask, part)
        return batch.filter(mask)

    def row_groups(self, metadata: pa.parquet.FileMetaData, stored: str) -> list[int] | None:
        """The row groups of a file whose statistics for the time column (named `stored` in the file) can hold rows
        in range; None when every group must be read (no bounds, or no such column)."""
        if self.low is None and self.high is None:
            return None
        names = metadata.schema.names
        if stored not in names:
            return None
        index = names.index(stored)
        keep = []
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                keep.append(group)  # unknown: read it (the row filter decides)
                continue
            low, high = stats.min_raw, stats.max_raw
            known = isinstance(low, int) and isinstance(high, int)
            if not known or ((self.high is None or low < self.high) and (self.low is None or high >= self.low)):
                keep.append(group)
        return keep

    def where(self) -> str:
        """The same filter as SQL, from the integers above (nothing user-typed reaches the text)."""
        ident = quote_ident(self.column)
        clauses = [f"{ident} {op} {self._literal(bound)}" for bound, op in ((self.low, ">="), (self.high, "<"))
                   if bound is not None]
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def _literal(self, units: int) -> str:
        if self.pg_type in _INTEGER_TYPES:
            return str(int(units))
        if self.pg_type == "date":
            return f"'{(_EPOCH.date() + timedelta(days=units)).isoformat()}'::date"
        instant = _EPOCH + timedelta(microseconds=units)
        if self.pg_type.endswith("with time zone"):
            return f"'{instant.isoformat()}'::timestamptz"
        return f"'{instant.replace(tzinfo=None).isoformat()}'::timestamp"  # the wall clock, read as UTC like the archive


def _units(pg_type: str, value: Bound) -> int | None:
    if value is None:
        return None
    if pg_type in _INTEGER_TYPES:
        if not isinstance(value, int):
            raise ArchiverError(f"the time column is {pg_type}: --from and --to must be integers")
        return value
    if isinstance(value, int) or not isinstance(value, datetime):
        raise ArchiverError(f"the time column is {pg_type}: --from and --to must be ISO 8601 timestamps")
    micros = (value.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    if pg_type == "date":
        return -((-micros) // 86_400_000_000)  # a date is in range when its midnight is: round up to whole days
    return micros


def parse_bound(text: str | None, name: str) -> Bound:
    """--from/--to: an ISO 8601 timestamp (UTC unless it says otherwise), or an integer for integer time columns."""
    if text is None or text == "":
        return None
    if re.fullmatch(r"-?\d{1,19}", text.strip()):
        return int(text)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ArchiverError(f"{name} {text!r} is not an ISO 8601 timestamp (e.g. 2024-01-01T00:00:00Z) "
                            "or an integer") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: Bound) -> str | None:
    return None if value is None else str(value) if isinstance(value, int) else value.isoformat()


def range_name(table: str, start: Bound, end: Bound) -> str:
    """The default target's name for a range: <table>__<from>_<to>."""
    def part(value: Bound) -> str:
        if value is None:
            return "open"
        if isinstance(value, int):
            return str(value).replace("-", "m")
        value = value.astimezone(UTC)
        return value.strftime("%Y%m%d" if value.time() == datetime.min.time() else "%Y%m%d_%H%M%S")

    return f"{table.split('.', 1)[1]}__{part(start)}_{part(end)}"[:63]


def overlaps(job: Job, start: Bound, end: Bound) -> bool:
    lo, hi = job.range_start, job.range_end
    if isinstance(start, datetime) and isinstance(lo, int) or isinstance(start, int) and isinstance(lo, datetime):
        raise ArchiverError(f"{job.table} is partitioned by {'an integer' if isinstance(lo, int) else 'a time'} "
                            "column: give --from/--to as " + ("integers" if isinstance(lo, int) else "timestamps"))
    return (end is None or lo is None or lo < end) and (start is None or hi is None or hi > start)  # type: ignore[operator]
