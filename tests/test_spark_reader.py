"""Every kind of archived table opened through PySpark, as Databricks, Fabric notebooks and Synapse Spark open it: a
Spark Connect server (Sail, PyPI `pysail`, Rust: no JVM, nothing downloaded) and the PySpark client, in .venv-spark
(tests/spark_client.py).

One database on native TimescaleDB 2.28.3 holds a table of each shape the archiver writes: names Spark's Delta reader
would refuse or find ambiguous, space partitions with compressed chunks, integer time, naive timestamps, and a range
partitioned table holding every supported type. All are archived and dropped; then each Delta table in the lake is
read through Spark and compared with a copy kept in PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from shared_code.engine import Engine

from .conftest import NATIVE_ADMIN, NATIVE_PORT, ROOT, _require, settings_for
from .test_lake_names import _make_table
from .test_live_query import _make_metrics
from .test_types_pg import COLUMNS, ROWS

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = "spark"


SPARK_PYTHON = ROOT / ".venv-spark" / "bin" / "python"


def spark(*requests: dict) -> list:
    """Answers from PySpark (tests/spark_client.py in .venv-spark, where the client's pandas cannot reach tsarchive)."""
    if not SPARK_PYTHON.exists():
        pytest.fail(f"{SPARK_PYTHON} is missing: `make setup` creates it (pysail and the PySpark client)")
    done = subprocess.run([str(SPARK_PYTHON), str(ROOT / "tests" / "spark_client.py")], input=json.dumps(requests),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def test_every_archived_table_opens_in_spark_with_every_row(archive):
    tables = _tables(archive["lake"])
    assert set(tables) == set(archive["rows"])
    schemas = spark(*({"schema": path} for path in tables.values()))
    # every column by name, backquoted: names Spark cannot tell apart (ignoring case) would be "ambiguous" here
    answers = spark(*({"sql": f"SELECT count(*) FROM (SELECT {', '.join(f'`{n}`' for n, _ in schema)} "
                              f"FROM delta.`{path}`)"} for path, schema in zip(tables.values(), schemas, strict=True)))
    assert {t: a[0][0] for t, a in zip(tables, answers, strict=True)} == archive["rows"]


def test_spark_sees_the_same_values_as_postgresql(archive):
    tables = _tables(archive["lake"])
    with psycopg.connect(archive["dsn"]) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        odd = conn.execute('SELECT sum("Temp (C)")::bigint, sum("Value"), sum("value"), '
                           "to_char(min(\"Start At\"), 'YYYY-MM-DD HH24:MI:SS'), "
                           "to_char(max(\"Start At\"), 'YYYY-MM-DD HH24:MI:SS') "
                           'FROM public.odd_names_copy WHERE "Start At" < \'2021-01-01\'').fetchone()
        naive = conn.execute("SELECT min(ts)::text, max(ts)::text, count(*) FROM public.naive_copy").fetchone()
        metrics = conn.execute("SELECT sum(value)::bigint, count(DISTINCT device) FROM public.metrics_copy "
                               "WHERE ts < '2021-01-01'").fetchone()
        ticks = conn.execute("SELECT sum(t), sum(value)::bigint FROM public.ticks_copy WHERE t < 5000").fetchone()
    answers = spark(
        {"sql": "SELECT CAST(sum(temp_c) AS BIGINT), sum(Value), sum(value_2), "
                "date_format(min(start_at), 'yyyy-MM-dd HH:mm:ss'), date_format(max(start_at), 'yyyy-MM-dd HH:mm:ss') "
                f"FROM delta.`{tables['odd_names']}`"},
        # Spark matches names ignoring case, as Databricks does by default: "VALUE" is the column "Value", unambiguous
        {"sql": f"SELECT count(VALUE) FROM delta.`{tables['odd_names']}`"},
        # a naive timestamp reads as its wall clock with the session in UTC
        {"sql": "SELECT date_format(min(ts), 'yyyy-MM-dd HH:mm:ss'), date_format(max(ts), 'yyyy-MM-dd HH:mm:ss'), "
                f"count(*) FROM delta.`{tables['naive']}`"},
        {"sql": f"SELECT CAST(sum(value) AS BIGINT), count(DISTINCT device) FROM delta.`{tables['metrics']}`"},
        {"sql": f"SELECT sum(t), CAST(sum(value) AS BIGINT) FROM delta.`{tables['ticks']}`"},
        {"schema": tables["typed"]},
        {"sql": f"SELECT n2, t FROM delta.`{tables['typed']}` WHERE ts = TIMESTAMP '2020-01-01 00:00:01'"},
    )
    assert answers[0] == [list(odd)]
    assert answers[1] == [[archive["rows"]["odd_names"]]]
    assert answers[2] == [list(naive)]
    assert answers[3] == [list(metrics)]
    assert answers[4] == [list(ticks)]
    kinds = dict(answers[5])
    assert kinds["n2"] == "decimal(10,2)" and kinds["ia"] == "array<int>" and kinds["by"] == "binary"
    assert kinds["ts"] == "timestamp" and kinds["d"] == "date" and kinds["u"] == "string"
    assert answers[6] == [["12.34", "text"]]


def test_the_notebook_example_in_docs_querying_runs(archive):
    import re

    page = (ROOT / "docs" / "querying.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "spark.read" in b]
    local = _tables(archive["lake"])["metrics"]
    (shown,) = spark({"python": block.replace("abfss://archive@acct.dfs.core.windows.net/timescale/public.metrics",
                                              local)})
    counts = {(int(y), int(m)): int(n) for y, m, n in re.findall(r"\|\s*(\d{4})\|\s*(\d+)\|\s*(\d+)\|", shown)}
    with psycopg.connect(archive["dsn"]) as conn:
        months = conn.execute("SELECT extract(year FROM ts AT TIME ZONE 'UTC')::int, "
                              "extract(month FROM ts AT TIME ZONE 'UTC')::int, count(*) FROM public.metrics_copy "
                              "WHERE ts < '2021-01-01' GROUP BY 1, 2").fetchall()
    assert counts == {(y, m): n for y, m, n in months}
