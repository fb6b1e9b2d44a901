"""How archived rows are partitioned in the lake table, from each row's own time value.

Time columns (timestamptz, timestamp, date): `year=YYYY/month=M`, the UTC year and month of the row (month unpadded,
so Hive-style readers infer the same integer the Delta log records). A chunk that crosses a month boundary is split,
so a partition folder never holds rows of another month.
Integer time columns: `range_start=N`, the start of the row's source chunk range (rows lie in [N, chunk end)).
If the table's data columns (by their lake names, ignoring case) already have such a name, the partition column is
prefixed with `archive_`.
Rows whose time is NULL or +/-infinity go to Delta's null partition (`__HIVE_DEFAULT_PARTITION__`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import ArchiverError

if TYPE_CHECKING:
    import pyarrow as pa

NULL_FOLDER = "__HIVE_DEFAULT_PARTITION__"
_INT64_MAX = 9_223_372_036_854_775_807
_INT32_MAX = 2_147_483_647
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}
INTEGER_TYPES = {"smallint", "integer", "bigint"}

PartitionKey = tuple[int | None, ...]


def _free_name(name: str, taken: set[str]) -> str:
    return name if name not in taken else f"archive_{name}"  # `taken` is casefolded: readers match names ignoring case


@dataclass(frozen=True)
class PartitionSpec:
    """The partition columns of one archived table and how a row's values are derived."""

    time_column: str
    columns: tuple[str, ...]
    integer: bool

    @classmethod
    def for_table(cls, time_column: str, time_type: str, data_columns: list[str]) -> PartitionSpec:
        """`time_column` and `data_columns` by their lake names."""
        taken = {c.casefold() for c in data_columns}
        if time_type in INTEGER_TYPES:
            return cls(time_column, (_free_name("range_start", taken),), integer=True)
        if time_type in TIME_TYPES:
            prefix = "archive_" if {"year", "month"} & taken else ""
            return cls(time_column, (f"{prefix}year", f"{prefix}month"), integer=False)
        raise ArchiverError(f"time column {time_column!r} has type {time_type}; expected a timestamp, date or integer")

    def arrow_fields(self) -> list[pa.Field]:
        import pyarrow as pa

        kind = pa.int64() if self.integer else pa.int32()
        return [pa.field(name, kind, nullable=True) for name in self.columns]

    def folder(self, key: PartitionKey) -> str:
        """Hive-style folder of a partition, e.g. `year=2024/month=1`."""
        return "/".join(f"{name}={NULL_FOLDER if value is None else value}"
                        for name, value in zip(self.columns, key, strict=True))

    def delta_values(self, key: PartitionKey) -> dict[str, str | None]:
        """Partition values as the Delta log records them (canonical integers)."""
        return {name: None if value is None else str(value) for name, value in zip(self.columns, key, strict=True)}

    def split(self, batch: pa.RecordBatch, chunk_start: int | None = None) -> Iterator[tuple[PartitionKey, pa.RecordBatch]]:
        """Yield (partition key, rows) for every partition present in the batch."""
        if self.integer:
            yield (chunk_start,), batch
            return
        import pyarrow as pa
        import pyarrow.compute as pc

        column = batch.column(self.time_column)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        is_date = pa.types.is_date32(column.type)
        top = _INT32_MAX if is_date else _INT64_MAX
        raw = column.view(pa.int32() if is_date else pa.int64())
        if column.null_count == 0:  # the common case, a batch within one month: two scalars, no per-row work
            bounds = pc.min_max(raw)
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if lo is not None and -top < lo and hi < top:
                try:
                    first, last = _month_of(lo, column.type), _month_of(hi, column.type)
                except OverflowError:  # beyond Python's years 1-9999: the general path below handles it
                    first, last = (None, None), (None, 0)
                if first == last:
                    yield first, batch
                    return
        finite = pc.and_(pc.greater(raw, -top), pc.less(raw, top))
        values = pc.if_else(finite, column, pa.scalar(None, column.type))
        codes = pc.add(pc.multiply(pc.year(values).cast(pa.int32()), 100), pc.month(values).cast(pa.int32()))
        distinct = pc.unique(codes)
        if len(distinct) == 1:
            yield _key(distinct[0].as_py()), batch
            return
        for code in sorted(distinct.to_pylist(), key=lambda c: (c is None, c)):
            mask = pc.is_null(codes) if code is None else pc.fill_null(pc.equal(codes, code), False)
            yield _key(code), batch.filter(mask)


def _month_of(value: int, kind: pa.DataType) -> PartitionKey:
    """UTC (year, month) of a raw date32 (days) or timestamp (its unit) value."""
    import pyarrow as pa

    if pa.types.is_date32(kind):
        moment = _EPOCH + timedelta(days=value)
    else:
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        moment = _EPOCH + timedelta(seconds=value // per_second, microseconds=(value % per_second) * 1_000_000 // per_second)
    return moment.year, moment.month


def _key(code: int | None) -> PartitionKey:
    return (None, None) if code is None else (code // 100, code % 100)


def month_keys(range_start, range_end) -> list[PartitionKey]:
    """Every (year, month) a [start, end) time range touches, for listing its folders."""
    if not isinstance(range_start, datetime) or not isinstance(range_end, datetime):
        return []
    lo, hi = range_start.astimezone(UTC), range_end.astimezone(UTC)
    keys, year, month = [], lo.year, lo.month
    while (year, month) <= (hi.year, hi.month) and len(keys) < 1200:
        keys.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return keys
