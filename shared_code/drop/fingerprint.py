"""A chunk's fingerprint: row count and content hash computed in SQL, which the drop compares with the archive."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ..database.connection import relation_sql
from ..errors import ArchiverError
from ..typemap import ColumnPlan


def row_alias(column_names: list[str]) -> str:
    """A table alias no column shares: `alias::text` must mean the whole row, and a column of that name would win."""
    alias = "tsarchive_row"
    while alias in column_names:
        alias += "_"
    return alias


def fingerprint_sql(rel: str, plans: list[ColumnPlan], column_names: list[str] | None = None) -> str:
    """One scan: row count, order-independent content hash, and the special values the writer must handle."""
    alias = row_alias(column_names if column_names is not None else [p.name for p in plans])
    parts = ["count(*)", f"coalesce(sum(hashtextextended({alias}::text, 0)::numeric), 0)::text"]
    for plan in plans:
        ident = '"' + plan.name.replace('"', '""') + '"'
        if plan.check_infinite:
            parts.append(f"count(*) FILTER (WHERE NOT isfinite({alias}.{ident}))")
        if plan.check_ndims:
            parts.append(f"coalesce(max(array_ndims({alias}.{ident})), 0)")
    return f"SELECT {', '.join(parts)} FROM {rel} AS {alias}"


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    content_hash: str
    infinite_columns: frozenset[str]
    multidim_columns: frozenset[str]

    @property
    def token(self) -> str:
        return f"{self.rows}:{self.content_hash}"


def parse_fingerprint(row: tuple, plans: list[ColumnPlan]) -> Fingerprint:
    values = list(row)
    rows, content = int(values[0]), str(values[1])
    infinite, multidim = set(), set()
    index = 2
    for plan in plans:
        if plan.check_infinite:
            if int(values[index] or 0) > 0:
                infinite.add(plan.name)
            index += 1
        if plan.check_ndims:
            if int(values[index] or 0) > 1:
                multidim.add(plan.name)
            index += 1
    return Fingerprint(rows, content, frozenset(infinite), frozenset(multidim))


def fingerprint(conn: psycopg.Connection, schema: str, name: str, plans: list[ColumnPlan],
                column_names: list[str] | None = None) -> Fingerprint:
    row = conn.execute(fingerprint_sql(relation_sql(schema, name), plans, column_names)).fetchone()
    if row is None:
        raise ArchiverError(f"could not fingerprint {schema}.{name}")
    return parse_fingerprint(row, plans)
