"""Stream a chunk out of PostgreSQL as Arrow record batches, in one consistent snapshot (ADBC).

Rows never become Python objects: ADBC decodes COPY binary into Arrow, and fix-ups are Arrow compute kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .db import SESSION_SETTINGS, Fingerprint, fingerprint_sql, parse_fingerprint, relation_sql
from .errors import ArchiverError, UnsupportedTypeError
from .typemap import ColumnPlan

INT64_MAX = 9_223_372_036_854_775_807
INT32_MAX = 2_147_483_647


@dataclass
class Snapshot:
    """The consistent view an extraction reads: a batch stream and, from the same snapshot, the fingerprint."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    _fingerprint: Callable[[], Fingerprint]

    def fingerprint(self) -> Fingerprint:
        """Row count and content hash of the snapshot (waits for the parallel scan if there is one)."""
        return self._fingerprint()


def _check_fingerprint(fp: Fingerprint) -> Fingerprint:
    if fp.multidim_columns:
        names = ", ".join(sorted(fp.multidim_columns))
        raise UnsupportedTypeError(
            f"column(s) {names} hold multi-dimensional arrays, which Parquet lists cannot represent faithfully. "
            "Store them as 1-D arrays or jsonb, then rerun."
        )
    return fp


def _fingerprint_in_snapshot(dsn: str, snapshot_id: str, rel: str, plans: list[ColumnPlan]) -> Fingerprint:
    """The fingerprint scan on a second connection that imports the extraction's snapshot, so both run at once."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        for setting, value in SESSION_SETTINGS.items():
            conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(setting), sql.Literal(value)))
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
        row = conn.execute(fingerprint_sql(rel, plans)).fetchone()
        conn.execute("COMMIT")
    assert row is not None
    return parse_fingerprint(tuple(row), plans)


def _select_sql(rel: str, plans: list[ColumnPlan], infinite: frozenset[str]) -> str:
    items = []
    for plan in plans:
        if plan.name in infinite:
            ident = '"' + plan.name.replace('"', '""') + '"'
            items.append(f"CASE WHEN isfinite({ident}) THEN {ident} END AS {ident}")
            items.append(
                f"CASE WHEN {ident} = 'infinity' THEN 1::int2 WHEN {ident} = '-infinity' THEN -1::int2 "
                f"ELSE 0::int2 END AS {plan.flag_column()}"
            )
        else:
            items.append(plan.select_sql)
    return f"SELECT {', '.join(items) or '1'} FROM {rel}"


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
        src = source.field(plan.name)
        fields.append(pa.field(plan.name, _target_type(plan, src.type), nullable=True,
                               metadata={b"pg_type": plan.pg_type.encode()}))
    return pa.schema(fields, metadata=meta)


def _fix_infinite(values: pa.Array, flags: pa.Array, is_date: bool) -> pa.Array:
    """Map PostgreSQL +/-infinity to DuckDB's infinity sentinels (max/-max of the storage integer)."""
    storage = pa.int32() if is_date else pa.int64()
    top = INT32_MAX if is_date else INT64_MAX
    raw = values.view(storage)
    fixed = pc.if_else(pc.equal(flags, 1), pa.scalar(top, storage),
                       pc.if_else(pc.equal(flags, -1), pa.scalar(-top, storage), raw))
    return fixed.view(values.type)


def convert_batch(batch: pa.RecordBatch, plans: list[ColumnPlan], schema: pa.Schema, infinite: frozenset[str]) -> pa.RecordBatch:
    """Apply per-column fix-ups and return a batch with exactly `schema`."""
    arrays = []
    for plan, field in zip(plans, schema, strict=True):
        column = batch.column(plan.name)
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
        elif plan.name in infinite:
            column = _fix_infinite(column, batch.column(plan.flag_column()), plan.conversion == "infinite_date")
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_timestamp(column.type) and column.type.tz is None:
            column = column.view(field.type)  # same microseconds, now labelled UTC (a cast would shift nothing either)
        if column.type != field.type:
            column = column.cast(field.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@contextmanager
def open_snapshot(dsn: str, schema: str, name: str, plans: list[ColumnPlan], batch_size_bytes: int,
                  meta: dict[bytes, bytes], parallel_fingerprint: bool = True) -> Iterator[Snapshot]:
    """Open a REPEATABLE READ snapshot; stream the chunk from it and fingerprint the same snapshot.

    With parallel_fingerprint the fingerprint scan runs at the same time on a second connection that imports the
    snapshot (pg_export_snapshot); otherwise it runs first, on the same connection.
    """
    import adbc_driver_postgresql.dbapi as adbc

    rel = relation_sql(schema, name)
    try:
        conn = adbc.connect(dsn, autocommit=True)
    except Exception as error:  # ADBC raises driver-specific classes
        raise ArchiverError(f"cannot open an extraction connection: {str(error).splitlines()[0]}") from None
    cursor = conn.cursor()
    pool: ThreadPoolExecutor | None = None
    pending: Future[Fingerprint] | None = None
    try:
        for setting, value in SESSION_SETTINGS.items():
            cursor.execute(f"SET {setting} = '{value}'")
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if parallel_fingerprint:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot_row = cursor.fetchone()
            assert snapshot_row is not None
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsarchive-fingerprint")
            pending = pool.submit(_fingerprint_in_snapshot, dsn, str(snapshot_row[0]), rel, plans)
            # Not known yet which columns hold infinities: select the flags of every column that could.
            infinite = frozenset(p.name for p in plans if p.check_infinite)
            fingerprint: Callable[[], Fingerprint] = lambda: _check_fingerprint(pending.result())  # noqa: E731
        else:
            cursor.execute(fingerprint_sql(rel, plans))
            row = cursor.fetchone()
            assert row is not None
            first = _check_fingerprint(parse_fingerprint(tuple(row), plans))
            infinite = first.infinite_columns
            fingerprint = lambda: first  # noqa: E731
        cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_size_bytes)})
        cursor.execute(_select_sql(rel, plans, infinite))
        reader = cursor.fetch_record_batch()
        out_schema = output_schema(reader.schema, plans, meta)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in reader:
                if batch.num_rows:
                    yield convert_batch(batch, plans, out_schema, infinite)

        yield Snapshot(schema=out_schema, batches=batches(), _fingerprint=fingerprint)
    finally:
        if pending is not None:
            try:
                pending.result()  # the snapshot must stay exported until the scan has imported it
            except Exception:  # noqa: BLE001 - reported through Snapshot.fingerprint(); here we only wait
                pass
        if pool is not None:
            pool.shutdown(wait=True)
        try:
            cursor.close()
        finally:
            conn.close()  # ends the read-only transaction
