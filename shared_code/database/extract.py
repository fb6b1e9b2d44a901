"""Stream a chunk out of PostgreSQL as Arrow record batches, in one consistent snapshot (ADBC).

Rows never become Python objects: ADBC decodes COPY binary into Arrow, and fix-ups are Arrow compute kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ArchiverError, UnsupportedTypeError, render_error
from ..lake_columns import PG_NAME
from ..read_ahead import ReadAhead
from ..typemap import ColumnPlan, quote_ident
from .adbc import BATCH_SIZE_HINT, ArrowConnection, ArrowCursor
from .connection import SESSION_SETTINGS, relation_sql

INT64_MAX = 9_223_372_036_854_775_807
INT32_MAX = 2_147_483_647
# ADBC shifts PostgreSQL's epoch (2000-01-01) to Arrow's (1970-01-01) without an overflow check, so PostgreSQL's
# +/-infinity (the int64/int32 extremes) arrive as these wrapped values. No finite PostgreSQL value maps to them.
_TIMESTAMP_INFINITY = (INT64_MAX + 946_684_800_000_000 - 2**64, -(2**63) + 946_684_800_000_000)
_DATE_INFINITY = (INT32_MAX + 10_957 - 2**32, -(2**31) + 10_957)


@dataclass
class Snapshot:
    """The consistent view an extraction reads: its batches, and the pg_snapshot they were read in."""

    schema: pa.Schema
    batches: ReadAhead[pa.RecordBatch]  # iterate it, or `.tagged()` for (stream, batch): each stream is one time range
    snapshot: str  # pg_current_snapshot() as text: the drop's change check compares rows against it
    relation_oid: int | None  # the chunk's identity as read in the snapshot
    streams: int


class ArraysNeedText(ArchiverError):
    """Some array values need their exact text form (several dimensions, or a lower bound other than 1)."""

    def __init__(self, columns: list[str]) -> None:
        super().__init__(f"column(s) {', '.join(columns)} hold arrays a Parquet list cannot hold exactly")
        self.columns = columns


def _check_arrays(batch: pa.RecordBatch, plans: list[ColumnPlan]) -> None:
    odd = [p.name for p in plans if p.check_ndims and not p.text_companion
           and (pc.max(batch.column(p.ndims_column())).as_py() or 0) > 0]
    if odd:
        raise ArraysNeedText(sorted(odd))


def _odd_array(ident: str) -> str:
    return f"(array_ndims({ident}) > 1 OR array_lower({ident}, 1) <> 1)"


def _select_sql(rel: str, plans: list[ColumnPlan], where: str = "") -> str:
    """Each column selected under its lake name (ColumnPlan.output), with the array checks the plans ask for."""
    items = []
    for plan in plans:
        ident, alias = quote_ident(plan.name), quote_ident(plan.output)
        if plan.check_ndims and plan.text_companion:
            # a list where the list is exact, PostgreSQL's text (dimensions and bounds included) where it is not
            items.append(f"CASE WHEN {_odd_array(ident)} THEN NULL ELSE {plan.expression} END AS {alias}")
            items.append(f"CASE WHEN {_odd_array(ident)} THEN {ident}::text END AS {quote_ident(plan.text_companion)}")
            continue
        if plan.check_ndims:
            # ADBC cannot decode such arrays at all: keep them out of the stream, and flag that they exist
            items.append(f"CASE WHEN {_odd_array(ident)} THEN 1 ELSE 0 END AS {plan.ndims_column()}")
            items.append(f"CASE WHEN {_odd_array(ident)} THEN NULL ELSE {plan.expression} END AS {alias}")
            continue
        items.append(f"{plan.expression} AS {alias}")
    return f"SELECT {', '.join(items) or '1'} FROM {rel}{where}"


def _target_type(plan: ColumnPlan, source: pa.DataType) -> pa.DataType:
    """The archived type: only types a Delta reader v1 understands (no extension types, no naive timestamps)."""
    if plan.conversion == "decimal":
        assert plan.precision is not None
        return pa.decimal128(max(plan.precision, 1), plan.scale or 0)
    if isinstance(source, pa.BaseExtensionType):  # arrow.json (json/jsonb) -> its string storage
        return source.storage_type
    if pa.types.is_timestamp(source) and source.tz is None:  # timestamp without time zone: the wall clock as UTC
        return pa.timestamp(source.unit, tz="UTC")
    return source


def output_schema(source: pa.Schema, plans: list[ColumnPlan], meta: dict[bytes, bytes]) -> pa.Schema:
    """The Parquet schema: source types after fix-ups, each field tagged with its PostgreSQL type."""
    fields = []
    for plan in plans:
        src = source.field(plan.output)
        tags = {b"pg_type": plan.pg_type.encode(), PG_NAME.encode(): plan.name.encode()}
        fields.append(pa.field(plan.output, _target_type(plan, src.type), nullable=True, metadata=tags))
        if plan.text_companion:
            fields.append(pa.field(plan.text_companion, pa.string(), nullable=True,
                                   metadata={**tags, b"text_of": plan.output.encode()}))
    return pa.schema(fields, metadata=meta)


def _fix_infinite(values: pa.Array, is_date: bool) -> pa.Array:
    """Map PostgreSQL +/-infinity (as ADBC delivers them) to DuckDB's infinity sentinels (max/-max of the storage)."""
    storage = pa.int32() if is_date else pa.int64()
    positive, negative = _DATE_INFINITY if is_date else _TIMESTAMP_INFINITY
    raw = values.view(storage)
    low = pc.min(raw).as_py()
    if low is None or low > negative:  # one pass: no infinity in this batch (both sentinels sit at the very bottom)
        return values
    top = INT32_MAX if is_date else INT64_MAX
    fixed = pc.if_else(pc.equal(raw, positive), pa.scalar(top, storage),
                       pc.if_else(pc.equal(raw, negative), pa.scalar(-top, storage), raw))
    return fixed.view(values.type)


def convert_batch(batch: pa.RecordBatch, plans: list[ColumnPlan], schema: pa.Schema) -> pa.RecordBatch:
    """Apply per-column fix-ups and return a batch with exactly `schema`."""
    arrays = []
    fields = iter(schema)
    for plan in plans:
        field = next(fields)
        column = batch.column(plan.output)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if plan.conversion == "decimal":
            try:
                column = pc.cast(column, field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise UnsupportedTypeError(
                    f"column {plan.name!r} ({plan.pg_type}) holds a value Parquet DECIMAL cannot store "
                    f"(NaN, Infinity or out of range): {error}. Alter the column to plain numeric, which is archived "
                    "as exact text."
                ) from None
        elif plan.check_infinite:
            column = _fix_infinite(column, plan.conversion == "infinite_date")
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            column = column.view(field.type)  # same microseconds, now labelled UTC (a cast would shift nothing either)
        if column.type != field.type:
            column = column.cast(field.type)
        arrays.append(column)
        if plan.text_companion:
            companion = batch.column(plan.text_companion)
            arrays.append(companion if companion.type == pa.string() else companion.cast(pa.string()))
            next(fields)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def page_ranges(pages: int, streams: int) -> list[tuple[int | None, int | None]]:
    """Split a heap of `pages` pages into contiguous ctid ranges, open at both ends so no row is missed."""
    if streams <= 1 or pages <= 0:
        return [(None, None)]
    bounds = [pages * i // streams for i in range(1, streams)]
    lows: list[int | None] = [None, *bounds]
    highs: list[int | None] = [*bounds, None]
    return list(zip(lows, highs, strict=True))


@dataclass(frozen=True)
class TimeSlices:
    """How a compressed chunk's read splits into streams: by its time column over its range, not by heap pages (its
    heap is empty; its rows come out of decompression, which each stream then runs on its share of the batches)."""

    column: str
    low: datetime | int
    high: datetime | int
    pages: int  # the compressed relation's size, which sets the number of streams as heap pages do


def time_filters(slices: TimeSlices, streams: int) -> list[str]:
    """WHERE clauses cutting [low, high) into `streams` slices; the first and last are open (the first also takes a
    NULL time), so every row falls in exactly one whatever the bounds."""
    low, high = slices.low, slices.high
    if streams <= 1 or isinstance(low, bool) or isinstance(high, bool) or type(low) is not type(high) or high <= low:
        return [""]
    ident = quote_ident(slices.column)
    cuts = [low + (high - low) * i // streams for i in range(1, streams)] if isinstance(low, int) else \
        [low + (high - low) * i / streams for i in range(1, streams)]  # type: ignore[operator]
    literals = [str(int(c)) if isinstance(c, int) else f"'{c.isoformat()}'::timestamptz" for c in cuts]
    filters = [f" WHERE ({ident} < {literals[0]} OR {ident} IS NULL)"]
    filters += [f" WHERE {ident} >= {a} AND {ident} < {b}" for a, b in zip(literals, literals[1:], strict=False)]
    return [*filters, f" WHERE {ident} >= {literals[-1]}"]


def ctid_filter(low: int | None, high: int | None) -> str:
    clauses = ([f"ctid >= '({low},0)'::tid"] if low is not None else []) + (
        [f"ctid < '({high},0)'::tid"] if high is not None else [])
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


class Extractor:
    """ADBC connections kept for a worker's life, and consistent-snapshot reads of one chunk over one or more streams.

    Connections are reused because ADBC reads the server's whole pg_type catalog at connect: about a second per
    connection in a database of 10,000 chunks.
    """

    def __init__(self, dsn: Callable[[], str], *, batch_size_bytes: int, max_streams: int = 1,
                 min_pages_per_stream: int = 2048, lock_timeout_ms: int | None = None) -> None:
        self.dsn, self.batch_size_bytes = dsn, batch_size_bytes  # dsn() per connect: an Entra token may have expired
        self.lock_timeout_ms = lock_timeout_ms
        self.max_streams, self.min_pages_per_stream = max(1, max_streams), min_pages_per_stream
        self._idle: list[ArrowConnection] = []

    def close(self) -> None:
        while self._idle:
            _close_quietly(self._idle.pop())

    def _take(self) -> ArrowConnection:
        if self._idle:
            return self._idle.pop()
        try:
            conn = ArrowConnection(self.dsn())
        except Exception as error:  # ADBC raises driver-specific classes
            raise ArchiverError(f"cannot open an extraction connection: {render_error(error)}") from None
        cursor = conn.cursor()
        try:
            for setting, value in SESSION_SETTINGS.items():
                cursor.execute(f"SET {setting} = '{value}'")
            if self.lock_timeout_ms:  # a chunk locked by DDL fails this attempt (retried later) instead of hanging
                cursor.execute(f"SET lock_timeout = '{int(self.lock_timeout_ms)}ms'")
        finally:
            cursor.close()
        return conn

    @contextmanager
    def connection(self) -> Iterator[ArrowConnection]:
        """A pooled ADBC connection with the session settings; closed instead of pooled if the work failed."""
        conn = self._take()
        try:
            yield conn
        except BaseException:
            _close_quietly(conn)
            raise
        self._idle.append(conn)

    def streams_for(self, pages: int) -> int:
        """How many parallel ctid-range streams a heap of this many pages gets."""
        return max(1, min(self.max_streams, pages // self.min_pages_per_stream))

    @contextmanager
    def snapshot(self, schema: str, name: str, plans: list[ColumnPlan], meta: dict[bytes, bytes], *,
                 pages: int = 0, slices: TimeSlices | None = None) -> Iterator[Snapshot]:
        """Read a chunk in one REPEATABLE READ snapshot; with `pages`, over parallel ctid ranges sharing it, with
        `slices` (a compressed chunk), over parallel time slices sharing it.

        The first connection's transaction takes the snapshot and exports it; the others import it
        (SET TRANSACTION SNAPSHOT), so every stream sees exactly the same rows.
        """
        rel = relation_sql(schema, name)
        if slices is not None:
            filters = time_filters(slices, self.streams_for(slices.pages))
        else:
            filters = [ctid_filter(low, high) for low, high in page_ranges(pages, self.streams_for(pages))]
        conns: list[ArrowConnection] = []
        healthy = False
        batches: ReadAhead[pa.RecordBatch] | None = None
        try:
            conns.append(self._take())
            lead = conns[0].cursor()
            lead.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            literal = "'" + rel.replace("'", "''") + "'"
            lead.execute(f"SELECT pg_current_snapshot()::text, to_regclass({literal})::oid::bigint"
                         + (", pg_export_snapshot()" if len(filters) > 1 else ""))
            row = lead.fetchone()
            assert row is not None
            snapshot_text, oid = str(row[0]), (int(row[1]) if row[1] is not None else None)
            cursors = [lead]
            for _ in filters[1:]:
                conns.append(self._take())
                cursor = conns[-1].cursor()
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute(f"SET TRANSACTION SNAPSHOT '{row[2]}'")
                cursors.append(cursor)
            readers = []
            for cursor, where in zip(cursors, filters, strict=True):
                cursor.set_options(**{BATCH_SIZE_HINT: str(self.batch_size_bytes)})
                cursor.execute(_select_sql(rel, plans, where))
                readers.append(cursor.fetch_record_batch())
            out_schema = output_schema(readers[0].schema, plans, meta)

            def convert(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
                for batch in reader:
                    if batch.num_rows:
                        _check_arrays(batch, plans)
                        yield convert_batch(batch, plans, out_schema)

            # decoded on worker threads (one per stream) while the caller writes: ADBC and Arrow release the GIL
            batches = ReadAhead([convert(r) for r in readers], 2 * len(readers), name="tsarchive-extract")
            yield Snapshot(schema=out_schema, batches=batches, snapshot=snapshot_text, relation_oid=oid,
                           streams=len(readers))
            for cursor in cursors:
                cursor.execute("COMMIT")  # read only: ends the snapshot
                cursor.close()
            healthy = True
        finally:
            if batches is not None:
                batches.close()  # stops and joins the stream threads, read to the end or not
            for conn in conns:
                if healthy:
                    self._idle.append(conn)
                else:  # a half-read stream or an aborted transaction: never hand this connection out again
                    _close_quietly(conn)


def query_batches(cursor: ArrowCursor, rel: str, plans: list[ColumnPlan], where: str = "", *,
                  batch_size_bytes: int | None = None) -> Iterator[pa.RecordBatch]:
    """Rows of `rel` (filtered by a WHERE clause the caller built from checked values), as the archive's Arrow types."""
    if batch_size_bytes:
        cursor.set_options(**{BATCH_SIZE_HINT: str(batch_size_bytes)})
    cursor.execute(_select_sql(rel, plans, where))
    reader = cursor.fetch_record_batch()
    schema = output_schema(reader.schema, plans, {})
    for batch in reader:
        if batch.num_rows:
            _check_arrays(batch, plans)
            yield convert_batch(batch, plans, schema)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass
