"""Staging: the lake's rows into a loose table the server can cast from, and the casts back to the recorded types.

Rows go in by ADBC's bulk ingest (COPY), or as bound inserts where the server has no COPY FROM STDIN.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..database import connection as db
from ..errors import ArchiverError
from ..ledger.jobs import Job
from ..typemap import quote_ident, text_companion
from .context import Progress
from .selection import Columns
from .target import RESTORE_SCHEMA

if TYPE_CHECKING:
    import pyarrow as pa

    from ..row_hash import RowSetHash


def _flag(name: str) -> str:
    return f"__tsarchive_inf_{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _prepare(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Arrow batch -> what ADBC can load: extension types to storage, infinity sentinels to flags + NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, names = [], []
    for field_, column in zip(batch.schema, batch.columns, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_timestamp(column.type) or pa.types.is_date32(column.type):
            is_date = pa.types.is_date32(column.type)
            storage = pa.int32() if is_date else pa.int64()
            top = 2_147_483_647 if is_date else 9_223_372_036_854_775_807
            raw = column.view(storage)
            flags = pc.if_else(pc.equal(raw, top), 1, pc.if_else(pc.equal(raw, -top), -1, 0)).cast(pa.int16())
            column = pc.if_else(pc.not_equal(flags, 0), pa.scalar(None, column.type), column)
            arrays.append(flags)
            names.append(_flag(field_.name))
        arrays.append(column)
        names.append(field_.name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _stage_type(kind: pa.DataType) -> str:
    """The column type a staged Arrow type loads into (what ADBC's own ingest would create)."""
    import pyarrow as pa

    simple = [(pa.types.is_boolean, "boolean"), (pa.types.is_int8, "smallint"), (pa.types.is_int16, "smallint"),
              (pa.types.is_int32, "integer"), (pa.types.is_int64, "bigint"), (pa.types.is_float32, "real"),
              (pa.types.is_float64, "double precision"), (pa.types.is_string, "text"),
              (pa.types.is_large_string, "text"), (pa.types.is_binary, "bytea"), (pa.types.is_large_binary, "bytea"),
              (pa.types.is_date32, "date")]
    for test, name in simple:
        if test(kind):
            return name
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision},{kind.scale})"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _stage_type(kind.value_type) + "[]"
    raise ArchiverError(f"cannot stage Arrow type {kind} for restore")


def stage(cursor: Any, batches: Iterator[pa.RecordBatch], stage_name: str, hashed: RowSetHash,
          progress: Progress, job: Job, *, serial: bool) -> dict[str, str]:
    """Load the lake's rows into a staging table, hashing them on the way; the staged columns' types."""

    first = next(batches, None)
    if first is None:
        return {}

    def counted() -> Iterator[pa.RecordBatch]:
        for batch in _chain(first, batches):
            hashed.update(batch)
            progress("rows", {"job_id": job.id, "rows": batch.num_rows})
            yield _prepare(batch)

    prepared = counted()
    head = next(prepared)
    rel = db.relation_sql(RESTORE_SCHEMA, stage_name)
    if serial:
        # The WASM build has no COPY FROM STDIN: create the table and bind the rows as prepared-statement parameters.
        cursor.execute(f"CREATE UNLOGGED TABLE {rel} ("
                       + ", ".join(f"{quote_ident(f.name)} {_stage_type(f.type)}" for f in head.schema) + ")")
        insert = f"INSERT INTO {rel} VALUES ({', '.join(f'${i + 1}' for i in range(head.num_columns))})"
        for batch in _chain(head, prepared):
            cursor.executemany(insert, batch)
    else:
        cursor.ingest(stage_name, head.schema, _chain(head, prepared), schema=RESTORE_SCHEMA, create=True)
    literal = "'" + rel.replace("'", "''") + "'"
    cursor.execute("SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                   f"WHERE a.attrelid = {literal}::regclass AND a.attnum > 0 AND NOT a.attisdropped")
    return {name: re.sub(r"\(.*\)", "", display) for name, display in cursor.fetchall()}


def select_exprs(columns: Columns, staged: dict[str, str]) -> str:
    """The SELECT list that casts every staged column back to its recorded type."""
    names = [c["name"] for c in columns]
    return ", ".join(_select_expr(c, staged, names) for c in columns)


def _select_expr(column: dict[str, str], staged: dict[str, str], names: list[str]) -> str:
    """The staged column cast back to its recorded type: infinity flags, exact array text, uuid bytes."""
    name, pg_type = column["name"], column["pg_type"]
    if name not in staged:
        return f"NULL::{pg_type}"
    ident = "s." + quote_ident(name)
    staged_type = staged[name]
    if pg_type == "uuid" and staged_type == "bytea":
        expression = f"CASE WHEN {ident} IS NULL THEN NULL ELSE encode({ident}, 'hex')::uuid END"
    elif _flag(name) in staged:
        flag = "s." + quote_ident(_flag(name))
        expression = (f"CASE WHEN {flag} = 1 THEN 'infinity'::{pg_type} WHEN {flag} = -1 THEN '-infinity'::{pg_type} "
                      f"ELSE {ident}::{pg_type} END")
    elif staged_type.endswith("[]") and staged_type != pg_type:
        expression = f"{ident}::text::{pg_type}"  # element types archived as text parse back through the array literal
    else:
        expression = f"{ident}::{pg_type}"
    companion = text_companion(name, names)
    if companion in staged:  # arrays of several dimensions or other bounds come back from their exact text
        text = "s." + quote_ident(companion)
        expression = f"CASE WHEN {text} IS NOT NULL THEN {text}::{pg_type} ELSE {expression} END"
    return expression


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


