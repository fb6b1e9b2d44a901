"""The guard in front of `tsarchive query --live`: one read-only statement, calling nothing that leaves the snapshot."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .errors import ArchiverError, render_error

# Functions that reach PostgreSQL outside the attached, read-only catalog (postgres_execute can end the read-only
# transaction and write), or attach and load things: a --live query may not call them.
_FORBIDDEN = re.compile(r"^(postgres_|json_execute_serialized_sql|attach|detach|load|install|read_text|read_blob|"
                        r"write_|copy_|getenv|duckdb_secrets|query_table|query$)", re.I)


def check_sql(text: str) -> set[tuple[str | None, str]]:
    """One SELECT (or EXPLAIN of one), calling nothing that reaches PostgreSQL outside the read-only catalog; the
    tables it names, as (schema or None, name)."""
    import duckdb

    if not text.strip():
        raise ArchiverError('no SQL given: tsarchive query --live "SELECT count(*) FROM <schema>.<table>"')
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as error:
        raise ArchiverError(f"query failed: {render_error(error).rstrip('.!')}") from None
    if len(statements) != 1:
        raise ArchiverError(f"--live runs one statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        raise ArchiverError(f"--live only reads: a {kind.name} statement is refused (the database is attached "
                            "read-only and the query may only SELECT)")
    with duckdb.connect() as probe:
        try:
            tree = json.loads(probe.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchone()[0])
        except duckdb.Error as error:
            raise ArchiverError(f"query failed: {render_error(error).rstrip('.!')}") from None
    if tree.get("error"):
        if kind == duckdb.StatementType.EXPLAIN:  # json_serialize_sql serializes SELECTs only: check the inner one
            inner = re.sub(r"^\s*explain(\s+analyze)?\s+", "", text, flags=re.I)
            if inner != text:
                return check_sql(inner)
        raise ArchiverError(f"--live only reads: {tree.get('error_message', 'the statement is not a plain SELECT')}")
    called = sorted({name for name in _function_names(tree) if _FORBIDDEN.match(name)})
    if called:
        raise ArchiverError(f"--live refuses {', '.join(called)}: a live query reads the managed tables through the "
                            "read-only snapshot and may not reach PostgreSQL, files or extensions another way")
    return set(_table_names(tree))


def _table_names(node: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
            yield (node.get("schema_name") or None, node["table_name"])
        for value in node.values():
            yield from _table_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _table_names(value)


def _function_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("function_name"), str):  # scalar, aggregate, window and table functions alike
            yield node["function_name"]
        for value in node.values():
            yield from _function_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _function_names(value)
