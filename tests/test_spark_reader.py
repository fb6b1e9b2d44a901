"""Every kind of archived table opened through the PySpark DataFrame API, as Databricks, Fabric notebooks and Synapse
Spark open it: a Spark Connect server (Sail, PyPI `pysail`, Rust: no JVM, nothing downloaded) and the PySpark client.

One database on native TimescaleDB 2.28.3 holds a table of each shape the archiver writes: names Spark's Delta reader
would refuse or find ambiguous, space partitions with compressed chunks, integer time, naive timestamps, and a range
partitioned table holding every supported type. All are archived and dropped; then each Delta table in the lake is
read through Spark and compared with a copy kept in PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from shared_code.engine import Engine

from .conftest import NATIVE_ADMIN, NATIVE_PORT, _require, settings_for
from .test_lake_names import _make_table
from .test_live_query import _make_metrics
from .test_types_pg import COLUMNS, ROWS

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = "spark"


@pytest.fixture(scope="module")
def spark() -> Iterator:
    pytest.importorskip("pysail", reason="pysail is in requirements-dev.txt: `make setup` installs it")
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    _, port = server.listening_address
    session = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
    session.conf.set("spark.sql.session.timeZone", "UTC")  # what a notebook should set to read the archive as UTC
    yield session
    session.stop()
    server.stop()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Iterator[dict]:
    """The tables archived and dropped; their copies in PostgreSQL (public.<table>_copy); the lake."""
    _require(NATIVE_PORT, "native TimescaleDB")
    name = f"t_spark_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(NATIVE_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = NATIVE_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    lake = tmp_path_factory.mktemp("spark") / "lake"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("CREATE EXTENSION timescaledb")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            _make_table(conn, f"{SCHEMA}.odd_names")
            _make_metrics(conn, f"{SCHEMA}.metrics", space=True, compress=True)
            conn.execute(f"CREATE TABLE {SCHEMA}.ticks (t bigint NOT NULL, device int4 NOT NULL, value float8)")
            conn.execute(f"SELECT create_hypertable('{SCHEMA}.ticks', by_range('t', 1000))")
            conn.execute(f"CREATE FUNCTION {SCHEMA}.ticks_now() RETURNS bigint LANGUAGE SQL STABLE AS $$ SELECT 10000::bigint $$")
            conn.execute(f"SELECT set_integer_now_func('{SCHEMA}.ticks', '{SCHEMA}.ticks_now')")
            conn.execute(f"INSERT INTO {SCHEMA}.ticks SELECT i * 3, i % 6, (i % 90)::float8 FROM generate_series(0, 3333) i")
            conn.execute(f"CREATE TABLE {SCHEMA}.naive (ts timestamp NOT NULL, device int4, value float8)")
            conn.execute(f"SELECT create_hypertable('{SCHEMA}.naive', by_range('ts', INTERVAL '7 days'))")
            conn.execute(f"""INSERT INTO {SCHEMA}.naive SELECT '2020-01-01'::timestamp + i * interval '41 minutes',
                             i % 5, (i % 321)::float8 FROM generate_series(0, 2999) i""")
            conn.execute("CREATE TYPE mood_t AS ENUM ('happy', 'sad')")
            conn.execute("CREATE DOMAIN positive_int AS int4 CHECK (VALUE > 0)")
            conn.execute(f"CREATE TABLE {SCHEMA}.typed ({COLUMNS}) PARTITION BY RANGE (ts)")
            conn.execute(f"CREATE TABLE {SCHEMA}.typed_2020 PARTITION OF {SCHEMA}.typed "
                         "FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
            for row in ROWS:
                conn.execute(f"INSERT INTO {SCHEMA}.typed VALUES {row}")
            tables = ["odd_names", "metrics", "ticks", "naive", "typed"]
            for table in tables:
                conn.execute(f"CREATE TABLE public.{table}_copy AS SELECT * FROM {SCHEMA}.{table}")
        settings = settings_for(dsn, lake, include=[f"{SCHEMA}.{t}" for t in tables[:4]],
                                partitioned_tables=[f"{SCHEMA}.typed"], integer_retention={f"{SCHEMA}.ticks": 5000})
        with Engine(settings, clock=lambda: NOW) as engine:
            report = engine.run()
        assert not report.failed, [s.detail for s in report.steps if s.outcome == "failed"]
        with psycopg.connect(dsn) as conn:
            archived = dict(conn.execute("SELECT table_name, sum(row_count) FROM archiver.jobs WHERE state = 'dropped' "
                                         "GROUP BY 1").fetchall())
        assert set(archived) == set(tables)
        yield {"dsn": dsn, "lake": lake, "rows": {t: int(n) for t, n in archived.items()}}
    finally:
        with psycopg.connect(NATIVE_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(lake: Path) -> dict[str, str]:
    return {log.parent.name.split(".", 1)[1]: str(log.parent) for log in lake.glob("*/_delta_log")}


def test_every_archived_table_opens_in_spark_with_every_row(spark, archive):
    from pyspark.sql import functions as F

    tables = _tables(archive["lake"])
    assert set(tables) == set(archive["rows"])
    for table, path in tables.items():
        frame = spark.read.format("delta").load(path)
        assert frame.count() == archive["rows"][table], table
        # every column by name: names Spark cannot tell apart (ignoring case) would be "ambiguous" here
        every = frame.select(*[F.col(f"`{c}`") for c in frame.columns]).toArrow()
        assert every.num_rows == archive["rows"][table] and every.column_names == frame.columns
        # (Sail 0.7.2 does not pass Delta field metadata to the client, so `pg_name` is checked through delta-rs, in
        # tests/test_lake_names.py)

def test_spark_sees_the_same_values_as_postgresql(spark, archive):
    from pyspark.sql import functions as F

    tables = _tables(archive["lake"])
    with psycopg.connect(archive["dsn"]) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        odd = conn.execute('SELECT sum("Temp (C)")::bigint, sum("Value"), sum("value"), min("Start At"), '
                           'max("Start At") FROM public.odd_names_copy WHERE "Start At" < \'2021-01-01\'').fetchone()
        naive = conn.execute("SELECT min(ts)::text, max(ts)::text, count(*) FROM public.naive_copy").fetchone()
        metrics = conn.execute("SELECT sum(value)::bigint, count(DISTINCT device) FROM public.metrics_copy "
                               "WHERE ts < '2021-01-01'").fetchone()
        ticks = conn.execute("SELECT sum(t), sum(value)::bigint FROM public.ticks_copy WHERE t < 5000").fetchone()

    row = spark.read.format("delta").load(tables["odd_names"]).agg(
        F.sum("temp_c").cast("bigint"), F.sum("Value"), F.sum("value_2"), F.min("start_at"), F.max("start_at"),
    ).toArrow().to_pylist()[0]
    assert list(row.values()) == list(odd)
    # Spark matches names ignoring case, as Databricks does by default: "VALUE" is the column "Value", unambiguous
    assert spark.read.format("delta").load(tables["odd_names"]).select("VALUE").count() == archive["rows"]["odd_names"]

    # a naive timestamp reads as its wall clock with the session in UTC
    row = spark.read.format("delta").load(tables["naive"]).agg(
        F.date_format(F.min("ts"), "yyyy-MM-dd HH:mm:ss"), F.date_format(F.max("ts"), "yyyy-MM-dd HH:mm:ss"), F.count("*"),
    ).toArrow().to_pylist()[0]
    assert list(row.values()) == list(naive)

    row = spark.read.format("delta").load(tables["metrics"]).agg(
        F.sum("value").cast("bigint"), F.countDistinct("device")).toArrow().to_pylist()[0]
    assert list(row.values()) == list(metrics)
    row = spark.read.format("delta").load(tables["ticks"]).agg(
        F.sum("t"), F.sum("value").cast("bigint")).toArrow().to_pylist()[0]
    assert list(row.values()) == list(ticks)

    typed = spark.read.format("delta").load(tables["typed"])
    kinds = {f.name: f.dataType.simpleString() for f in typed.schema.fields}
    assert kinds["n2"] == "decimal(10,2)" and kinds["ia"] == "array<int>" and kinds["by"] == "binary"
    assert kinds["ts"] == "timestamp" and kinds["d"] == "date" and kinds["u"] == "string"
    assert typed.filter(F.col("ts") == F.lit("2020-01-01 00:00:01").cast("timestamp")).select("n2", "t").toArrow() \
        .to_pylist() == [{"n2": __import__("decimal").Decimal("12.34"), "t": "text"}]


def test_the_notebook_example_in_docs_querying_runs(spark, archive, capsys):
    import re

    page = (Path(__file__).resolve().parent.parent / "docs" / "querying.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "spark.read" in b]
    local = _tables(archive["lake"])["metrics"]
    exec(compile(block.replace("abfss://archive@acct.dfs.core.windows.net/timescale/public.metrics", local),
                 "querying.md", "exec"), {"spark": spark})
    shown = {(int(y), int(m)): int(n) for y, m, n in re.findall(r"\|\s*(\d{4})\|\s*(\d+)\|\s*(\d+)\|",
                                                                   capsys.readouterr().out)}
    with psycopg.connect(archive["dsn"]) as conn:
        months = conn.execute("SELECT extract(year FROM ts AT TIME ZONE 'UTC')::int, "
                              "extract(month FROM ts AT TIME ZONE 'UTC')::int, count(*) FROM public.metrics_copy "
                              "WHERE ts < '2021-01-01' GROUP BY 1, 2").fetchall()
    assert shown == {(y, m): n for y, m, n in months}
