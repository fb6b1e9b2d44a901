"""Catalog reads: hypertables, chunks, range partitions, continuous-aggregate guards, columns and time columns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..errors import ArchiverError, ConfigError
from ..planning import AggregateGuard, Chunk, ChunkKind
from ..typemap import SourceColumn
from .connection import relation_sql

# What a type name as format_type() prints it can look like: names (quoted or not, schema-qualified), one typmod,
# a time zone clause, array brackets. Nothing else (no ';', no ')' outside a typmod) can pass.
_TYPE_NAME = re.compile(r'^[A-Za-z_"][A-Za-z0-9_ ."]*(\(\s*\d+\s*(,\s*-?\d+\s*)?\))?( with(out)? time zone)?(\[\d*\])*$')
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_BOUND = re.compile(r"^FOR VALUES FROM \((?P<lo>.+)\) TO \((?P<hi>.+)\)$", re.S)


def has_timescaledb(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def compressed_relation(conn: psycopg.Connection, schema: str, name: str) -> tuple[str, str] | None:
    """The TimescaleDB relation holding a chunk's compressed rows, if it has one."""
    if not has_timescaledb(conn):
        return None
    row = conn.execute(
        "SELECT cc.schema_name::text, cc.table_name::text FROM _timescaledb_catalog.chunk c "
        "JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id "
        "WHERE c.schema_name = %s AND c.table_name = %s",
        (schema, name),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def heap_pages(conn: psycopg.Connection, schema: str, name: str) -> int:
    """Pages in a relation's own heap (0 for a partitioned table, which has none)."""
    row = conn.execute(
        "SELECT CASE WHEN c.relkind IN ('r', 'm') THEN pg_relation_size(c.oid) / current_setting('block_size')::int "
        "ELSE 0 END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return int(row[0]) if row else 0


def total_pages(conn: psycopg.Connection, schema: str, name: str) -> int:
    """A relation's size with its indexes and TOAST (where compressed rows live), in pages."""
    row = conn.execute("SELECT pg_total_relation_size(%s::regclass) / current_setting('block_size')::int",
                       (relation_sql(schema, name),)).fetchone()
    return int(row[0]) if row else 0


def checked_type(conn: psycopg.Connection, text: object) -> str:
    """A PostgreSQL type name read from an untrusted place (the lake), returned only if it is one."""
    if not isinstance(text, str) or len(text) > 200 or not _TYPE_NAME.match(text):
        raise ArchiverError(f"{str(text)[:80]!r} is not a PostgreSQL type name; refusing to use it")
    try:
        row = conn.execute("SELECT to_regtype(%s) IS NOT NULL", (text,)).fetchone()
    except psycopg.Error:
        row = None
    if not row or not row[0]:
        raise ArchiverError(f"{text[:80]!r} is not a type in this database; refusing to use it")
    return text


def relation_oid(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    """The relation's OID: its identity, which a rename cannot carry over to another table."""
    row = conn.execute(
        "SELECT c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
    return int(row[0]) if row else None


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class Hypertable:
    schema: str
    name: str
    time_type: str
    integer_now_func: str | None


def user_hypertables(conn: psycopg.Connection) -> list[Hypertable]:
    """Every user hypertable; never TimescaleDB's internal materialization hypertables."""
    rows = conn.execute(
        """
        SELECT h.hypertable_schema, h.hypertable_name, d.column_type::text,
               (SELECT format('%I.%I', cd.integer_now_func_schema, cd.integer_now_func)
                  FROM _timescaledb_catalog.dimension cd
                  JOIN _timescaledb_catalog.hypertable ch ON ch.id = cd.hypertable_id
                 WHERE ch.schema_name = h.hypertable_schema AND ch.table_name = h.hypertable_name
                   AND cd.column_name = d.column_name AND cd.integer_now_func IS NOT NULL)
        FROM timescaledb_information.hypertables h
        JOIN timescaledb_information.dimensions d
          ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name
         AND d.dimension_number = 1
        WHERE h.hypertable_schema NOT LIKE '\\_timescaledb%'
          AND NOT EXISTS (
            SELECT 1 FROM timescaledb_information.continuous_aggregates ca
            WHERE ca.materialization_hypertable_schema = h.hypertable_schema
              AND ca.materialization_hypertable_name = h.hypertable_name)
        ORDER BY 1, 2
        """
    ).fetchall()
    return [Hypertable(*row) for row in rows]


def hypertable(conn: psycopg.Connection, schema: str, name: str) -> Hypertable | None:
    """One user hypertable, or None; read from TimescaleDB's own catalog, not its information views, whose planning
    alone costs about 10 ms on a catalog of 10,000 chunks (the drop asks this once per job)."""
    row = conn.execute(
        """
        SELECT h.schema_name::text, h.table_name::text, d.column_type::regtype::text,
               CASE WHEN d.integer_now_func IS NOT NULL
                    THEN format('%I.%I', d.integer_now_func_schema, d.integer_now_func) END
        FROM _timescaledb_catalog.hypertable h
        JOIN _timescaledb_catalog.dimension d ON d.hypertable_id = h.id AND d.interval_length IS NOT NULL
        WHERE h.schema_name = %s AND h.table_name = %s AND h.schema_name NOT LIKE '\\_timescaledb%%'
          AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id)
        ORDER BY d.id
        LIMIT 1
        """.replace("%I", "%%I"),
        (schema, name),
    ).fetchone()
    return Hypertable(*row) if row else None


def hypertable_chunks(conn: psycopg.Connection, table: Hypertable) -> list[Chunk]:
    rows = conn.execute(
        """
        SELECT chunk_schema, chunk_name, range_start, range_end, range_start_integer, range_end_integer,
               coalesce(is_compressed, false)
        FROM timescaledb_information.chunks
        WHERE hypertable_schema = %s AND hypertable_name = %s
        """,
        (table.schema, table.name),
    ).fetchall()
    integer = table.time_type in _INTEGER_TYPES
    return [
        Chunk(
            kind=ChunkKind.HYPERTABLE_CHUNK, table_schema=table.schema, table_name=table.name,
            chunk_schema=r[0], chunk_name=r[1],
            range_start=r[4] if integer else r[2], range_end=r[5] if integer else r[3],
            is_compressed=bool(r[6]), integer_time=integer,
        )
        for r in rows
    ]


def integer_now(conn: psycopg.Connection, func: str) -> int:
    row = conn.execute(sql.SQL("SELECT {}()::bigint").format(sql.SQL(func))).fetchone()
    assert row is not None
    return int(row[0])


def aggregate_guards(conn: psycopg.Connection, table: Hypertable, now: datetime) -> list[AggregateGuard]:
    """Continuous aggregates on this hypertable, with their refresh window (from the injected `now`) and watermark."""
    rows = conn.execute(
        """
        SELECT format('%%I.%%I', ca.view_schema, ca.view_name), h.id,
               (SELECT j.config FROM timescaledb_information.jobs j
                 WHERE j.proc_name = 'policy_refresh_continuous_aggregate'
                   AND (j.config->>'mat_hypertable_id')::int = h.id LIMIT 1)
        FROM timescaledb_information.continuous_aggregates ca
        JOIN _timescaledb_catalog.hypertable h
          ON h.schema_name = ca.materialization_hypertable_schema AND h.table_name = ca.materialization_hypertable_name
        WHERE ca.hypertable_schema = %s AND ca.hypertable_name = %s
        """,
        (table.schema, table.name),
    ).fetchall()
    guards = []
    if table.time_type in _INTEGER_TYPES:
        return [AggregateGuard(name=name, refresh_start=None, has_policy=config is not None, watermark=None)
                for name, _, config in rows]
    for name, mat_id, config in rows:
        refresh_start = None
        if config is not None and config.get("start_offset") is not None:
            row = conn.execute("SELECT %s::timestamptz - %s::interval", (now, str(config["start_offset"]))).fetchone()
            refresh_start = row[0] if row else None
        mark = conn.execute(
            """
            SELECT CASE WHEN w <= -210866803200000000 THEN NULL
                        ELSE _timescaledb_functions.to_timestamp(w) END
            FROM (SELECT _timescaledb_functions.cagg_watermark(%s)::bigint AS w) s
            """,
            (mat_id,),
        ).fetchone()
        guards.append(AggregateGuard(name=name, refresh_start=refresh_start, has_policy=config is not None,
                                     watermark=mark[0] if mark else None))
    return guards


def _bound_literal(text: str) -> str | None:
    text = text.strip()
    if text.upper() in ("MINVALUE", "MAXVALUE"):
        return None
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    return text  # numbers are unquoted


@dataclass(frozen=True)
class PartitionedTable:
    schema: str
    name: str
    key_type: str


def partitioned_table(conn: psycopg.Connection, qualified: str) -> PartitionedTable:
    """Validate a configured native partitioned table: RANGE on one column."""
    schema, _, name = qualified.rpartition(".")
    schema = schema or "public"
    row = conn.execute(
        """
        SELECT p.partstrat, p.partnatts, format_type(a.atttypid, a.atttypmod)
        FROM pg_partitioned_table p
        JOIN pg_class c ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
        WHERE n.nspname = %s AND c.relname = %s
        """,
        (schema, name),
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"ARCHIVER_PARTITIONED_TABLES names {qualified!r}, which is not a partitioned table in this database."
        )
    strategy, natts, key_type = row
    if strategy != "r" or natts != 1 or key_type is None:
        raise ConfigError(
            f"ARCHIVER_PARTITIONED_TABLES: {qualified!r} must be RANGE-partitioned on one column "
            "(a time or integer column); remove it from the list."
        )
    return PartitionedTable(schema, name, key_type)


def partition_chunks(conn: psycopg.Connection, table: PartitionedTable) -> list[Chunk]:
    """Leaf partitions with their time range; sub-partitions inherit their ancestor's range."""
    children = conn.execute(
        """
        SELECT n.nspname, c.relname, c.relkind, pg_get_expr(c.relpartbound, 0), c.oid  -- 0: no lock on the partition
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = %s::regclass
        """,
        (relation_sql(table.schema, table.name),),
    ).fetchall()
    integer = table.key_type in _INTEGER_TYPES
    chunks = []
    for schema, name, relkind, bound, oid in children:
        match = _BOUND.match(bound or "")
        lo_text = _bound_literal(match["lo"]) if match else None
        hi_text = _bound_literal(match["hi"]) if match else None
        lo: datetime | int | None = None
        hi: datetime | int | None = None
        if match:
            target = "bigint" if integer else "timestamptz"
            row = conn.execute(
                sql.SQL("SELECT (%s::text)::{key}::{t}, (%s::text)::{key}::{t}").format(
                    key=sql.SQL(table.key_type), t=sql.SQL(target)
                ),
                (lo_text, hi_text),
            ).fetchone()
            lo, hi = row if row else (None, None)
        leaves = [(schema, name)]
        if relkind == "p":
            leaves = conn.execute(
                """
                SELECT n.nspname, c.relname FROM pg_partition_tree(%s::regclass) t
                JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.isleaf
                """,
                (oid,),
            ).fetchall()
        for leaf_schema, leaf_name in leaves:
            chunks.append(
                Chunk(
                    kind=ChunkKind.PARTITION, table_schema=table.schema, table_name=table.name,
                    chunk_schema=leaf_schema, chunk_name=leaf_name,
                    range_start=lo, range_end=hi if match else None, integer_time=integer,
                )
            )
    return chunks


def source_columns(conn: psycopg.Connection, schema: str, name: str) -> list[SourceColumn]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), bt.typname, bt.typcategory,
               CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, et.typname, t.typtype = 'd'
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (relation_sql(schema, name),),
    ).fetchall()
    columns = []
    for attname, display, base, category, typmod, element, is_domain in rows:
        precision = scale = None
        if base == "numeric" and typmod is not None and typmod >= 4:
            precision = ((typmod - 4) >> 16) & 0xFFFF
            scale = (typmod - 4) & 0xFFFF
            if scale > 0x7FFF:  # PostgreSQL 15 allows negative scales
                scale -= 0x10000
        columns.append(SourceColumn(attname, display, base, category, precision, scale, element, bool(is_domain)))
    return columns


def time_column(conn: psycopg.Connection, kind: str, schema: str, name: str) -> tuple[str, str]:
    """The column rows are partitioned by in the lake (the primary dimension, or the partition key) and its type."""
    if kind == "partition":
        row = conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
            WHERE p.partrelid = %s::regclass
            """,
            (relation_sql(schema, name),),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT column_name::text, column_type::text FROM timescaledb_information.dimensions "
            "WHERE hypertable_schema = %s AND hypertable_name = %s AND dimension_number = 1",
            (schema, name),
        ).fetchone()
    if row is None:
        raise ArchiverError(f"cannot find the time column of {schema}.{name}; is it still a hypertable or "
                            "partitioned table?")
    return str(row[0]), str(row[1])


@dataclass(frozen=True)
class ChunkSource:
    """What the archive stage reads of one chunk before its snapshot, in one visit to the catalog."""

    columns: list[SourceColumn]
    time_name: str  # the table's time column (the primary dimension, or the partition key): the lake partitions by it
    time_type: str
    compressed: bool  # read through decompression, in time-slice streams
    heap_pages: int  # the heap's size, which splits an uncompressed chunk's read into page-range streams
    compressed_pages: int = 0  # the compressed relation's size with its TOAST, which sets a compressed chunk's streams


def chunk_source(conn: psycopg.Connection, kind: str, table_schema: str, table_name: str, chunk_schema: str,
                 chunk_name: str) -> ChunkSource | None:
    """A chunk's columns, its table's time column and how to stream it; None when the chunk no longer exists."""
    if not relation_exists(conn, chunk_schema, chunk_name):
        return None
    time_name, time_type = time_column(conn, kind, table_schema, table_name)
    compressed = compressed_relation(conn, chunk_schema, chunk_name)
    return ChunkSource(columns=source_columns(conn, chunk_schema, chunk_name), time_name=time_name,
                       time_type=time_type, compressed=compressed is not None,
                       heap_pages=0 if compressed else heap_pages(conn, chunk_schema, chunk_name),
                       compressed_pages=total_pages(conn, *compressed) if compressed else 0)


@dataclass(frozen=True)
class TableFacts:
    """An existing table's columns and comment (restore marks the tables it creates with a comment)."""

    columns: list[SourceColumn]
    comment: str


def describe_table(conn: psycopg.Connection, schema: str, name: str) -> TableFacts | None:
    """A table's columns and comment, or None when it does not exist."""
    if not relation_exists(conn, schema, name):
        return None
    row = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (relation_sql(schema, name),)).fetchone()
    return TableFacts(columns=source_columns(conn, schema, name), comment=str(row[0] or "") if row else "")
