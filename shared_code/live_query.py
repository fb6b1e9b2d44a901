"""`tsarchive query --live`: every managed table as the union of its rows still in PostgreSQL and its archived rows,
each row exactly once, at one consistent point.

How it stays exact while `tsarchive run` archives and drops at the same time:
- DuckDB's postgres scanner runs the whole query in one PostgreSQL transaction (REPEATABLE READ READ ONLY) on one
  connection (`pg_use_ctid_scan` off: the 1.5.5 scanner otherwise may run a parallel scan outside the snapshot).
- Its first statement locks the managed tables (ACCESS SHARE, every chunk and partition): a drop in flight commits
  first, and no chunk can be dropped until the query ends. LOCK takes no snapshot; the ledger read after it does.
- The archiver drops a chunk and marks its job dropped in one transaction, so in that snapshot a chunk's rows are
  either still in PostgreSQL or their job is `dropped` (or `archived` with the chunk gone from the catalog: dropped
  outside the archiver). Those jobs' rows come from exactly the files the ledger records for their latest archive;
  the files of chunks still in PostgreSQL, and files a later archive replaced, are never read.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .database import catalog
from .database import connection as db
from .errors import ArchiverError, render_error
from .planning import table_selected
from .query import _azure_secret, _extension, quote_ident, quote_literal
from .query_guard import check_sql
from .settings import Settings
from .storage.lake import Lake

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("tsarchive")

PG = "tsarchive_pg"  # the attached database's name inside DuckDB
_MAX_BRANCHES = 400  # lake scans per table: one per calendar month of archived chunks (or per group of integer ranges)


@dataclass(frozen=True)
class ManagedTable:
    """A table the archiver manages, as the live side of one view."""

    schema: str
    name: str
    kind: str  # "chunk" (hypertable) or "partition" (native range partitions)
    time_name: str
    time_type: str
    columns: tuple[str, ...] = ()  # PostgreSQL names in table order (DuckDB renames one equal to another ignoring case)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class LakeJob:
    """A job whose rows come from the lake in this snapshot: its chunk range and its latest archive's files."""

    source: tuple[str, str]  # (schema, table): a pair, so a dot in a name cannot make two tables one
    range_start: datetime | int | None
    range_end: datetime | int | None
    files: list[str]
    columns: list[str]
    table_exists: bool = True  # False: the source table itself is gone, and the lake holds all that is left of it
    pg_types: dict[str, str] = field(default_factory=dict)  # as the catalog named them when the chunk was archived
    job_id: int = 0
    restored: list[tuple[Any, Any]] = field(default_factory=list)  # [from, to) ranges put back into its source table
    lake_names: dict[str, str] = field(default_factory=dict)  # PostgreSQL name -> name in the files, where they differ

    def stored(self, name: str) -> str:
        """A column's name in this job's files."""
        return self.lake_names.get(name, name)


@dataclass
class LiveResult:
    columns: list[str]
    rows: list[tuple]
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # per table: chunks read from the lake, files


def managed_tables(settings: Settings) -> tuple[list[ManagedTable], str | None]:
    """Every selected hypertable and every configured range-partitioned table, with its time column; and, on a
    single-session server (the WASM build), the search_path to put back afterwards (the scanner sets its own)."""
    conn = db.connect(settings.database_dsn())
    try:
        shared = db.serializes_transactions(conn)
        search_path = str(conn.execute("SHOW search_path").fetchone()[0]) if shared else None
        tables = []
        if catalog.has_timescaledb(conn):
            for table in catalog.user_hypertables(conn):
                if table_selected(f"{table.schema}.{table.name}", settings.include, settings.exclude):
                    name, kind = catalog.time_column(conn, "chunk", table.schema, table.name)
                    columns = tuple(c.name for c in catalog.source_columns(conn, table.schema, table.name))
                    tables.append(ManagedTable(table.schema, table.name, "chunk", name, kind, columns))
        for qualified in settings.partitioned_tables:
            table = catalog.partitioned_table(conn, qualified)
            name, kind = catalog.time_column(conn, "partition", table.schema, table.name)
            columns = tuple(c.name for c in catalog.source_columns(conn, table.schema, table.name))
            tables.append(ManagedTable(table.schema, table.name, "partition", name, kind, columns))
        return tables, search_path
    finally:
        conn.close()


def scrub(text: str, *connection_strings: str | None) -> str:
    """A message with these connection strings, and any password or token in it, hidden."""
    for secret in connection_strings:
        if secret:
            text = text.replace(secret, db.redact(secret))
    return db.redact(text)


def _lake_uri(lake: Lake, relative: str) -> str:
    path = lake.path(relative)
    if lake.target.is_local:
        return path
    inner = path.split("/", 1)[1]
    if lake._connection_string:
        return f"az://{lake.target.container}/{inner}"
    return f"abfss://{lake.target.container}@{lake.target.account}.dfs.core.windows.net/{inner}"


def _literal(value: datetime | int, duck_type: str) -> str:
    if isinstance(value, int):
        return str(value)
    if duck_type == "DATE":
        return f"DATE '{value.astimezone(UTC).date().isoformat()}'"
    if duck_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"TIMESTAMPTZ '{value.astimezone(UTC).isoformat()}'"
    return f"TIMESTAMP '{value.astimezone(UTC).replace(tzinfo=None).isoformat()}'"


def _branches(jobs: list[LakeJob]) -> list[list[LakeJob]]:
    """Jobs grouped for the lake scans: by calendar month of their chunk's start, or in runs of integer ranges."""
    ordered = sorted(jobs, key=lambda j: (j.range_start is None, str(j.range_start) if not isinstance(j.range_start, int)
                                          else f"{j.range_start:030d}"))
    groups: dict[Any, list[LakeJob]] = {}
    for position, job in enumerate(ordered):
        start = job.range_start
        key = (start.astimezone(UTC).year, start.astimezone(UTC).month) if isinstance(start, datetime) else \
            position // max(1, -(-len(ordered) // _MAX_BRANCHES))
        # one scan reads its files by name: jobs whose files name a column differently are scanned apart
        groups.setdefault((key, tuple(sorted(job.lake_names.items()))), []).append(job)
    return list(groups.values())


_BLANK_PADDED = re.compile(r"^(character|char|bpchar)(\(\d+\))?$")


def _lake_column(name: str, live_type: str, stored_type: str | None, pg_type: str = "", stored: str = "") -> str:
    """One column of a lake scan as the live table names and types it: as stored when the types agree (so filters
    on it reach the Parquet statistics), cast otherwise, NULL for a column added after these chunks were archived.
    `stored` is its name in the files when that differs (lake_columns.py)."""
    alias = quote_ident(name)
    column = quote_ident(stored or name)
    if stored_type is None:
        return f"CAST(NULL AS {live_type}) AS {alias}"
    if _BLANK_PADDED.match(pg_type) and live_type == "VARCHAR":
        # char(n): the archive keeps PostgreSQL's padding, the scanner strips it (trailing blanks do not count there)
        return f"rtrim(CAST({column} AS VARCHAR), ' ') AS {alias}"
    if stored_type == live_type:
        return column if column == alias else f"{column} AS {alias}"
    return f"CAST({column} AS {live_type}) AS {alias}"


def _range_guard(time_name: str, time_type: str, group: list[LakeJob]) -> str:
    """WHERE time in [first chunk start, last chunk end): true of every archived row (a chunk holds only rows in its
    range), and lets DuckDB skip the whole scan when the query's own time filter cannot match it."""
    starts = [j.range_start for j in group]
    ends = [j.range_end for j in group]
    if any(v is None for v in starts + ends) or not time_type:
        return ""
    column = quote_ident(group[0].stored(time_name))  # the group's files all name it alike (_branches)
    return (f" WHERE {column} >= {_literal(min(starts), time_type)} "  # type: ignore[type-var]
            f"AND {column} < {_literal(max(ends), time_type)}")  # type: ignore[type-var]


def _restored_filter(lake: Lake, time_name: str, time_type: str, group: list[LakeJob]) -> str:
    """NOT (a restored job's file AND its restored range), for the jobs of a group that were restored into their
    source table; '' when none was."""
    column = quote_ident(group[0].stored(time_name)) if group else ""
    terms = []
    for job in group:
        files = ", ".join(quote_literal(_lake_uri(lake, f)) for f in job.files)
        for low, high in job.restored:
            inside = [f"{column} >= {_literal(low, time_type)}" if low is not None else "",
                      f"{column} < {_literal(high, time_type)}" if high is not None else ""]
            condition = " AND ".join(c for c in inside if c) or "true"
            terms.append(f"(filename IN ({files}) AND {condition})")
    return f"NOT ({' OR '.join(terms)})" if terms else ""


class LiveQuery:
    """One DuckDB connection holding one PostgreSQL snapshot, with every managed table as a view."""

    def __init__(self, settings: Settings, lake: Lake, connection_string: str | None) -> None:
        self.settings, self.lake, self.connection_string = settings, lake, connection_string
        self.tables, self._search_path = managed_tables(settings)
        self.duck: duckdb.DuckDBPyConnection | None = None
        self._dsn: str | None = None
        self.read_from_lake: dict[str, dict[str, int]] = {}

    def open(self, referenced: set[tuple[str | None, str]] | None = None) -> duckdb.DuckDBPyConnection:
        """The connection, in one snapshot, with the views; `referenced` ((schema or None, name) pairs a query names)
        narrows the locks and views to those tables (None, or no match: every managed table)."""
        import duckdb

        duck = duckdb.connect()
        self.duck = duck
        duck.execute("SET TimeZone = 'UTC'")  # casts and literals are read as UTC, as the archive writes them
        duck.execute("SET enable_progress_bar = false")  # it writes to stdout, into --json and --csv output
        duck.execute("SET autoinstall_known_extensions = false")  # nothing is fetched from the network
        duck.execute("SET autoload_known_extensions = false")
        duck.execute(f"LOAD {quote_literal(_extension('duckdb_extension_postgres_scanner'))}")
        if not self.lake.target.is_local:
            duck.execute(f"LOAD {quote_literal(_extension('duckdb_extension_azure'))}")
            _azure_secret(duck, self.lake, self.connection_string)
        duck.execute("SET pg_use_ctid_scan = false")
        self._dsn = self.settings.database_dsn()  # with Entra ID auth it carries a token: never shown (scrub)
        duck.execute(f"ATTACH {quote_literal(self._dsn)} AS {PG} (TYPE postgres, READ_ONLY)")
        tables = [t for t in self.tables if referenced is None or (t.schema, t.name) in referenced
                  or (None, t.name) in referenced] or self.tables
        live_types = {t.qualified: self._describe(t) for t in tables}
        duck.execute("BEGIN TRANSACTION")
        # The remote transaction's first statements: a bounded wait for the locks, then the locks. Neither takes
        # the snapshot; the ledger probe after them does.
        locks = ", ".join(db.relation_sql(t.schema, t.name) for t in tables)
        statement = (f"SET LOCAL lock_timeout = '{int(self.settings.lock_timeout_ms)}ms'; "
                     + (f"LOCK TABLE {locks} IN ACCESS SHARE MODE" if tables else "SELECT 1"))
        duck.execute(f"CALL postgres_execute('{PG}', {quote_literal(statement)})")
        probe = f"SELECT to_regclass({quote_literal(self.settings.ledger_schema + '.jobs')}) IS NOT NULL AS found"
        has_ledger = duck.execute(f"SELECT * FROM postgres_query('{PG}', {quote_literal(probe)})").fetchone()[0]
        jobs = self._lake_jobs() if has_ledger else []  # nothing archived yet: every row is in PostgreSQL
        for table in tables:
            self._create_view(table, live_types[table.qualified],
                              [j for j in jobs if j.source == (table.schema, table.name)])
        managed = {(t.schema, t.name) for t in self.tables}
        for gone in sorted({j.source for j in jobs if not j.table_exists} - managed):
            self._create_archive_only_view(gone, [j for j in jobs if j.source == gone])
        self._create_short_names()
        # From here the query reads the lake and the attached database only: no other file, and no setting back.
        duck.execute(f"SET allowed_directories = [{quote_literal(_lake_uri(self.lake, '').rstrip('/') + '/')}]")
        duck.execute("SET enable_external_access = false")
        duck.execute("SET lock_configuration = true")
        return duck

    def _create_short_names(self) -> None:
        """Each view also under its bare name when no other view has it, as plain `tsarchive query` does."""
        assert self.duck is not None
        views = self.duck.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal "
                                  "AND database_name = current_database()").fetchall()
        counts: dict[str, int] = {}
        for _, name in views:
            counts[name] = counts.get(name, 0) + 1
        for schema, name in views:
            if counts[name] == 1 and schema != "main":
                self.duck.execute(f"CREATE VIEW main.{quote_ident(name)} AS "
                                  f"SELECT * FROM {quote_ident(schema)}.{quote_ident(name)}")

    def _describe(self, table: ManagedTable) -> list[tuple[str, str]]:
        assert self.duck is not None
        rows = self.duck.execute(f"DESCRIBE {PG}.{quote_ident(table.schema)}.{quote_ident(table.name)}").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def _lake_jobs(self) -> list[LakeJob]:
        """In the snapshot: the jobs whose rows are no longer in PostgreSQL (dropped, or archived and gone)."""
        assert self.duck is not None
        ledger = quote_ident(self.settings.ledger_schema)
        text = (f"SELECT table_schema, table_name, chunk_schema || '.' || chunk_name AS chunk, id, state, "
                f"range_start, range_end, range_start_int, "
                f"range_end_int, lake_paths::text AS files, columns::text AS archived_columns, "
                f"to_regclass(format('%I.%I', chunk_schema, chunk_name)) IS NOT NULL AS chunk_exists, "
                f"to_regclass(format('%I.%I', table_schema, table_name)) IS NOT NULL AS table_exists "
                f"FROM {ledger}.jobs WHERE state IN ('archived', 'dropped') AND table_path IS NOT NULL")
        rows = self.duck.execute(f"SELECT * FROM postgres_query('{PG}', {quote_literal(text)})").fetchall()
        jobs = []
        for schema, table, chunk, job_id, state, start, end, start_int, end_int, paths, columns, exists, \
                table_exists in rows:
            if state == "archived" and exists:
                continue  # its rows are still in PostgreSQL, read there
            if state == "archived" and table_exists:
                # Gone without a recorded drop: dropped outside the archiver, or its rows moved (merged chunks, a
                # renamed partition). A guess could count rows twice or not at all.
                raise ArchiverError(f"{chunk} of {schema}.{table} is archived (job {job_id}) but no longer in the "
                                    "database, and the ledger records no drop: run `tsarchive run` (it re-checks "
                                    "the archive and records the drop), then query again")
            recorded = json.loads(columns or "[]")
            jobs.append(LakeJob((schema, table), start_int if start_int is not None else start,
                                end_int if end_int is not None else end, json.loads(paths or "[]"),
                                [c["name"] for c in recorded], bool(table_exists),
                                {c["name"]: str(c.get("pg_type", "")) for c in recorded}, int(job_id),
                                lake_names={c["name"]: str(c["lake_name"]) for c in recorded
                                            if c.get("lake_name") and c["lake_name"] != c["name"]}))
        restored = self._restored_ranges()
        for job in jobs:
            job.restored = restored.get(job.job_id, [])
        return jobs

    def _restored_ranges(self) -> dict[int, list[tuple[Any, Any]]]:
        """Per job, the ranges a finished restore put back into the job's own source table: those rows are in
        PostgreSQL again (or in a later job's archive), so the job's files must not count them a second time."""
        from .restore.bounds import parse_bound

        assert self.duck is not None
        ledger = quote_ident(self.settings.ledger_schema)
        text = (f"SELECT range_from, range_to, result::text AS result FROM {ledger}.restores "
                "WHERE state = 'done' AND target IS NOT NULL AND target = source_table")
        out: dict[int, list[tuple[Any, Any]]] = {}
        for low, high, result in self.duck.execute(
                f"SELECT * FROM postgres_query('{PG}', {quote_literal(text)})").fetchall():
            bounds = (parse_bound(low, "from"), parse_bound(high, "to"))
            for chunk in json.loads(result or "{}").get("chunks", []):
                if chunk.get("status") in ("restored", "present") and isinstance(chunk.get("job_id"), int):
                    out.setdefault(chunk["job_id"], []).append(bounds)
        return out

    def _create_archive_only_view(self, source: tuple[str, str], jobs: list[LakeJob]) -> None:
        """A source table dropped from the database altogether: its archive is all of it, as the lake types it."""
        assert self.duck is not None
        schema, name = source
        qualified = f"{schema}.{name}"
        uris = [_lake_uri(self.lake, f) for j in jobs for f in j.files]
        names = list(dict.fromkeys(c for j in jobs for c in j.columns))
        if not uris or not names:
            return
        parts = []
        for group in _branches([j for j in jobs if j.files]):
            listing = (f"read_parquet([{', '.join(quote_literal(_lake_uri(self.lake, f)) for j in group for f in j.files)}]"
                       ", union_by_name = true)")
            archived = {c for j in group for c in j.columns}
            select = ", ".join(f"{quote_ident(group[0].stored(n))} AS {quote_ident(n)}" if n in archived
                               else f"NULL AS {quote_ident(n)}" for n in names)
            parts.append(f"SELECT {select} FROM {listing}")
        self.read_from_lake[qualified] = {"chunks": len(jobs), "files": len(uris)}
        self.duck.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        self.duck.execute(f"CREATE VIEW {quote_ident(schema)}.{quote_ident(name)} AS " + " UNION ALL ".join(parts))

    def _create_view(self, table: ManagedTable, live: list[tuple[str, str]], jobs: list[LakeJob]) -> None:
        """The view: the live table's rows, then each group of lake files cast to the live column types."""
        assert self.duck is not None
        relation = f"{PG}.{quote_ident(table.schema)}.{quote_ident(table.name)}"
        parts = [f"SELECT {', '.join(quote_ident(name) for name, _ in live)} FROM {relation}"]
        # DuckDB's name for each column -> PostgreSQL's (they differ where a name equals another ignoring case)
        pg_name = dict(zip([n for n, _ in live], table.columns, strict=True)) if len(table.columns) == len(live) \
            else {n: n for n, _ in live}
        duck_name = {pg: duck for duck, pg in pg_name.items()}
        time_type = dict(live).get(duck_name.get(table.time_name, table.time_name), "")
        files = 0
        for group in _branches([j for j in jobs if j.files]):
            uris = [_lake_uri(self.lake, f) for j in group for f in j.files]
            files += len(uris)
            excluded = _restored_filter(self.lake, table.time_name, time_type, group)
            listing = (f"read_parquet([{', '.join(quote_literal(u) for u in uris)}], union_by_name = true"
                       f"{', filename = true' if excluded else ''})")
            stored = {str(r[0]): str(r[1]) for r in self.duck.execute(
                f"DESCRIBE SELECT * FROM read_parquet({quote_literal(uris[0])})").fetchall()}
            archived = {c for j in group for c in j.columns} or {pg_name[n] for n, _ in live if pg_name[n] in stored}
            pg_types = {k: v for j in group for k, v in j.pg_types.items()}
            # a column archived in this group but missing from its first file (added mid-group) is still read
            select = ", ".join(_lake_column(name, kind, stored.get(group[0].stored(pg_name[name]), "?")
                                            if pg_name[name] in archived else None,
                                            pg_types.get(pg_name[name], ""), group[0].stored(pg_name[name]))
                               for name, kind in live)
            guard = _range_guard(table.time_name, time_type, group)
            if excluded:
                guard = f"{guard} AND {excluded}" if guard else f" WHERE {excluded}"
            parts.append(f"SELECT {select} FROM {listing}{guard}")
        self.read_from_lake[table.qualified] = {"chunks": len(jobs), "files": files}
        self.duck.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        self.duck.execute(f"CREATE VIEW {quote_ident(table.schema)}.{quote_ident(table.name)} AS "
                          + " UNION ALL ".join(parts))

    def scrub(self, text: str) -> str:
        return scrub(text, self._dsn, self.settings.database_url.get_secret_value())

    def close(self) -> None:
        if self.duck is not None:
            try:
                self.duck.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - closing only
                pass
            self.duck.close()
            self.duck = None
        if self._search_path is not None:  # one session serves every client there: leave it as it was
            with db.connect(self.settings.database_dsn()) as conn:
                conn.execute("SELECT set_config('search_path', %s, false)", (self._search_path,))


def run_live_query(settings: Settings, lake: Lake, text: str, connection_string: str | None = None) -> LiveResult:
    """Run one read-only SQL statement over the whole history of every managed table."""
    import duckdb

    referenced = check_sql(text)
    live = LiveQuery(settings, lake, connection_string)
    try:
        duck = live.open(referenced)
        result = duck.execute(text)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall() if result.description else []
    except duckdb.Error as error:
        names = ", ".join(t.qualified for t in live.tables) or "none (check ARCHIVER_INCLUDE)"
        message = live.scrub(render_error(error).rstrip(".!"))
        raise ArchiverError(f"query failed: {message}. Managed tables: {names}") from None
    finally:
        live.close()
    return LiveResult(columns, rows, live.read_from_lake)


