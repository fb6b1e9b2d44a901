"""`tsarchive query`: DuckDB over the archive, with each archived table as a view named after its source table.

CLI only: DuckDB and its delta/azure extensions come from their PyPI packages (installed offline, no extension
download), and stay out of the function app's requirements.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArchiverError, render_error
from .lake_columns import PG_NAME
from .storage.lake import Lake, _parse_connection_string
from .storage.layout import DELTA_LOG, unescape

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class ArchivedTable:
    schema: str
    name: str
    folder: str  # relative to the lake root
    uri: str  # what delta_scan reads


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def archived_tables(lake: Lake) -> list[ArchivedTable]:
    """Every Delta table directly under the lake root (`<schema>.<table>/_delta_log`)."""
    from pyarrow import fs as pafs

    try:
        entries = lake.fs.get_file_info(pafs.FileSelector(lake.target.root, recursive=False, allow_not_found=True))
    except (FileNotFoundError, OSError) as error:
        raise ArchiverError(f"cannot list the lake {lake.url}: {render_error(error)}") from None
    tables = []
    for entry in entries:
        if entry.type != pafs.FileType.Directory:
            continue
        folder = entry.path.rsplit("/", 1)[-1]
        schema, dot, name = folder.partition(".")
        if not dot or lake.fs.get_file_info(f"{entry.path}/{DELTA_LOG}").type != pafs.FileType.Directory:
            continue
        tables.append(ArchivedTable(unescape(schema), unescape(name), folder, _scan_uri(lake, folder)))
    return sorted(tables, key=lambda t: (t.schema, t.name))


def _scan_uri(lake: Lake, folder: str) -> str:
    if lake.target.is_local:
        return lake.path(folder)
    inner = lake.path(folder).split("/", 1)[1]
    if lake._connection_string:
        return f"az://{lake.target.container}/{inner}"
    return f"abfss://{lake.target.container}@{lake.target.account}.dfs.core.windows.net/{inner}"


def _extension(module: str) -> str:
    """The extension binary shipped inside a duckdb-extension-* PyPI package."""
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ArchiverError(f"{module.replace('_', '-')} is not installed; `pip install tsarchive[query]` "
                            "(or `make setup`) installs DuckDB with its delta and azure extensions") from None
    found = sorted(Path(package.__file__).parent.rglob("*.duckdb_extension"))
    if not found:
        raise ArchiverError(f"{module} holds no DuckDB extension binary; reinstall it")
    return str(found[-1])


def connect(lake: Lake, connection_string: str | None = None) -> tuple[Any, list[ArchivedTable]]:
    """A DuckDB connection with every archived table as a view: `schema.table`, and `table` when unambiguous; and
    `tsarchive_columns`, each archived column's PostgreSQL name beside its name in the lake."""
    import duckdb

    tables = archived_tables(lake)
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")  # it writes to stdout, into --json and --csv output
    conn.execute(f"LOAD {quote_literal(_extension('duckdb_extension_delta'))}")
    if not lake.target.is_local:
        conn.execute(f"LOAD {quote_literal(_extension('duckdb_extension_azure'))}")
        _azure_secret(conn, lake, connection_string)
    names: dict[str, int] = {}
    for table in tables:
        names[table.name] = names.get(table.name, 0) + 1
    conn.execute("CREATE TABLE main.tsarchive_columns (table_schema VARCHAR, table_name VARCHAR, column_name VARCHAR, "
                 "lake_name VARCHAR, delta_type VARCHAR, pg_type VARCHAR, role VARCHAR)")
    for table in tables:
        select, columns = _original_names(lake, table)
        if columns:
            conn.executemany("INSERT INTO main.tsarchive_columns VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(table.schema, table.name, *c) for c in columns])
        scan = f"SELECT {select} FROM delta_scan({quote_literal(table.uri)})"
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        conn.execute(f"CREATE OR REPLACE VIEW {quote_ident(table.schema)}.{quote_ident(table.name)} AS {scan}")
        if names[table.name] == 1 and table.schema != "main" and table.name != "tsarchive_columns":
            conn.execute(f"CREATE OR REPLACE VIEW main.{quote_ident(table.name)} AS {scan}")
    return conn, tables


def _original_names(lake: Lake, table: ArchivedTable) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    """The view's SELECT list: each column under its PostgreSQL name (`pg_name` in the Delta schema), the partition
    columns and text companions as the lake names them; and the table's rows for `tsarchive_columns` (PostgreSQL
    name, lake name, Delta type, PostgreSQL type, role). `*` and no rows if the schema cannot be read here (DuckDB's
    own read then reports why, e.g. an offline log)."""
    from .storage.delta_table import ArchiveTable, _type_name
    from .storage.partitioning import PartitionSpec

    try:
        loaded = ArchiveTable(lake, table.folder, PartitionSpec("", (), integer=False)).load()
        fields = loaded.schema().fields if loaded is not None else []
        partitions = set(loaded.metadata().partition_columns) if loaded is not None else set()
    except Exception:  # noqa: BLE001 - DuckDB's own read reports it, with the offline hint
        return "*", []
    items, rows = [], []
    for delta_field in fields:
        meta = delta_field.metadata or {}
        original = meta.get(PG_NAME)
        role = "partition" if delta_field.name in partitions else "text companion" if "text_of" in meta else "column"
        renamed = role == "column" and isinstance(original, str) and original != delta_field.name
        stored = quote_ident(delta_field.name)
        items.append(f"{stored} AS {quote_ident(original)}" if renamed else stored)
        rows.append((str(original) if role == "column" and isinstance(original, str) else delta_field.name,
                     delta_field.name, _type_name(delta_field.type), str(meta.get("pg_type", "")), role))
    return ", ".join(items) or "*", rows


def _azure_secret(conn: duckdb.DuckDBPyConnection, lake: Lake, connection_string: str | None) -> None:
    if connection_string:
        parts = _parse_connection_string(connection_string)
        text = ";".join(f"{k}={v}" for k, v in parts.items())
        if "DefaultEndpointsProtocol" not in parts and parts.get("BlobEndpoint", "").startswith("http://"):
            text = "DefaultEndpointsProtocol=http;" + text
        conn.execute(f"CREATE SECRET tsarchive_lake (TYPE azure, CONNECTION_STRING {quote_literal(text)})")
        return
    chain = "managed_identity;cli;env"
    conn.execute(f"CREATE SECRET tsarchive_lake (TYPE azure, PROVIDER credential_chain, CHAIN {quote_literal(chain)}, "
                 f"ACCOUNT_NAME {quote_literal(lake.target.account or '')})")


def run_query(lake: Lake, text: str, connection_string: str | None = None) -> tuple[list[str], list[tuple]]:
    """Run one SQL statement over the archive; return column names and rows."""
    import duckdb

    if not text.strip():
        raise ArchiverError("no SQL given: tsarchive query \"SELECT count(*) FROM <schema>.<table>\"")
    try:
        conn, tables = connect(lake, connection_string)
    except duckdb.Error as error:
        if _offline_error(error):
            raise ArchiverError(_offline_message(lake, archived_tables(lake))) from None
        raise
    try:
        result = conn.execute(text)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall() if result.description else []
    except duckdb.Error as error:
        if _offline_error(error):
            raise ArchiverError(_offline_message(lake, tables)) from None
        known = ", ".join(f"{t.schema}.{t.name}" for t in tables) or "none yet"
        first = render_error(error).rstrip(".!")
        raise ArchiverError(f"query failed: {first}. Archived tables: {known}") from None
    finally:
        conn.close()
    return columns, rows


def _offline_error(error: Exception) -> bool:
    """A read refused because the blob is in the Archive tier (409 BlobArchived), not a damaged or missing one."""
    text = str(error)
    return "BlobArchived" in text or "archived blob" in text


def _offline_message(lake: Lake, tables: list[ArchivedTable]) -> str:
    """Which tables have offline files (data, or the Delta log itself), and the command that brings each back."""
    parts = []
    for table in tables:
        files = lake.list_files(table.folder)
        log = [f for f in files if f"/{DELTA_LOG}/" in f"/{f}"]
        data = [f for f in files if f.endswith(".parquet") and f not in log and "/_" not in f"/{f}"]
        offline_data, offline_log = lake.offline(data), lake.offline(log)
        if offline_log:
            parts.append(f"{table.schema}.{table.name}: its Delta log is in the Archive tier ({len(offline_log)} "
                         "log file(s) offline), so no reader can open the table")
        if offline_data:
            parts.append(f"{table.schema}.{table.name}: {len(offline_data)} of {len(data)} data file(s) "
                         f"({sum(f.bytes for f in offline_data)} bytes) are in the Archive tier (offline)")
        if offline_data or offline_log:
            parts[-1] += f"; bring them back with: tsarchive rehydrate --hypertable {table.schema}.{table.name}"
    detail = "; ".join(parts) or "a file the query needs is in the Archive tier (offline)"
    return f"the archive is partly offline: {detail} (up to 15 hours at standard priority), then query again"
