"""`tsarchive query --live`: each managed table's whole history, hot rows and archived rows, each exactly once.

Every answer is compared with the same aggregate computed in PostgreSQL on a copy of the table taken before anything
was archived. Real parts: native TimescaleDB 2.28.3 (space partitions, compressed chunks, integer time), PostgreSQL 15
range partitions, a local lake and one on Azurite."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from datetime import UTC, datetime

import psycopg
import pytest

from shared_code.errors import ArchiverError
from shared_code.live_query import LiveQuery, check_sql, run_live_query, scrub
from shared_code.storage.lake import Lake

from .conftest import AZURITE_CONNECTION_STRING, TSARCHIVE, cli_env, engine_for, settings_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # pinned: the old data is from 2020, the hot data from late 2025
PG_AGGREGATE = ("SELECT count(*), sum(device)::bigint, sum(value)::bigint, sum(extract(epoch FROM ts)::bigint), "
                "min(ts), max(ts) FROM {}")
DUCK_AGGREGATE = ("SELECT count(*), sum(device)::BIGINT, sum(value)::BIGINT, sum(epoch(ts)::BIGINT), min(ts), "
                  "max(ts) FROM {}")


def _same(pg: tuple, duck: tuple) -> bool:
    """Counts and sums equal; the time bounds the same instant."""
    def norm(v):
        return v.timestamp() if isinstance(v, datetime) else int(v) if v is not None else None
    return [norm(v) for v in pg] == [norm(v) for v in duck]


def _make_metrics(conn: psycopg.Connection, table: str, *, space: bool = False, compress: bool = False) -> None:
    """Weekly chunks over Jan-Mar 2020 (due) and the last days of 2025 (hot); integer-valued floats, so sums are exact."""
    conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, device int4 NOT NULL, value float8)")
    conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '7 days'))")
    if space:
        conn.execute(f"SELECT add_dimension('{table}', by_hash('device', 2))")
    conn.execute(f"""INSERT INTO {table} SELECT '2020-01-01'::timestamptz + i * interval '37 minutes', i % 7,
                     (i % 1000)::float8 FROM generate_series(0, 3499) i""")
    conn.execute(f"""INSERT INTO {table} SELECT '2025-12-20'::timestamptz + i * interval '11 minutes', i % 5,
                     (i % 100)::float8 FROM generate_series(0, 999) i""")
    if compress:
        conn.execute(f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')")
        conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}', older_than => '2020-02-01'::timestamptz) c")


def _baseline(conn: psycopg.Connection, table: str, copy: str) -> tuple:
    conn.execute(f"CREATE TABLE {copy} AS SELECT * FROM {table}")
    return conn.execute(PG_AGGREGATE.format(copy)).fetchone()


def _live(settings, lake: Lake, sql: str, connection_string: str | None = None):
    return run_live_query(settings, lake, sql, connection_string)


@pytest.fixture
def hypertable(native_tsdb, tmp_path):
    """A space-partitioned hypertable with compressed chunks, its baseline, settings and a local lake."""
    box = native_tsdb
    table = f"{box.schema}.metrics"
    with box.connect() as conn:
        _make_metrics(conn, table, space=True, compress=True)
        baseline = _baseline(conn, table, "public.metrics_copy")
    overrides = {"ledger_schema": box.ledger, "include": [table]}
    return box, table, baseline, tmp_path / "lake", overrides


@pytest.mark.scenario("query --live during an archive run: every answer equals the pre-archive aggregate")
def test_live_answers_equal_the_copy_at_every_stage_of_archiving(hypertable):
    box, table, baseline, lake_dir, overrides = hypertable
    settings = settings_for(box.dsn, lake_dir, **overrides)
    lake = Lake(settings.lake_url)
    query = DUCK_AGGREGATE.format(table)
    assert _same(baseline, _live(settings, lake, query).rows[0])  # nothing archived yet

    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        report = engine.run(drop=False)
    assert report.steps and all(s.outcome == "done" for s in report.steps)
    result = _live(settings, lake, query)
    assert _same(baseline, result.rows[0])  # archived, not dropped: every row from PostgreSQL, no lake file read
    assert result.tables[table] == {"chunks": 0, "files": 0}

    with box.connect() as conn:  # a late row into an archived chunk that is still in the database
        conn.execute(f"INSERT INTO {table} VALUES ('2020-01-02 03:04:05+00', 3, 500)")
        expected = conn.execute(PG_AGGREGATE.format("(SELECT * FROM public.metrics_copy UNION ALL "
                                                    "SELECT '2020-01-02 03:04:05+00', 3, 500) x")).fetchone()
    assert _same(expected, _live(settings, lake, query).rows[0])

    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        report = engine.run()  # the changed chunk is archived again first, then every due chunk is dropped
    assert not report.failed
    with box.connect() as conn:
        dropped = conn.execute(f"SELECT count(*) FROM {box.ledger}.jobs WHERE state = 'dropped'").fetchone()[0]
        left = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert dropped > 0 and left == 1000  # only the hot rows are still in PostgreSQL
    result = _live(settings, lake, query)
    assert _same(expected, result.rows[0])
    assert result.tables[table]["chunks"] == dropped and result.tables[table]["files"] >= dropped


def test_a_dropped_range_written_to_again_gives_both_the_new_chunk_and_the_archived_one(hypertable):
    box, table, baseline, lake_dir, overrides = hypertable
    settings = settings_for(box.dsn, lake_dir, **overrides)
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    with box.connect() as conn:  # a new chunk is created for the old range
        conn.execute(f"INSERT INTO {table} VALUES ('2020-01-02 03:04:05+00', 3, 500)")
        expected = conn.execute(PG_AGGREGATE.format("(SELECT * FROM public.metrics_copy UNION ALL "
                                                    "SELECT '2020-01-02 03:04:05+00', 3, 500) x")).fetchone()
    assert _same(expected, _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table)).rows[0])


@pytest.mark.scenario("query --live while tsarchive run archives and drops: exact in every snapshot")
def test_live_stays_exact_while_a_run_archives_and_drops(native_tsdb, tmp_path):
    box = native_tsdb
    table = f"{box.schema}.daily"
    with box.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, device int4 NOT NULL, value float8)")
        conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '1 day'))")
        conn.execute(f"""INSERT INTO {table} SELECT '2020-01-01'::timestamptz + i * interval '3 minutes', i % 9,
                         (i % 777)::float8 FROM generate_series(0, 14399) i""")  # 30 daily chunks, all due
        baseline = _baseline(conn, table, "public.daily_copy")
    overrides = {"ledger_schema": box.ledger, "include": [table], "parallel_chunks": 2}
    settings = settings_for(box.dsn, tmp_path / "lake", **overrides)
    lake = Lake(settings.lake_url)
    outcome: dict = {}

    def archive_and_drop() -> None:
        with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
            outcome["report"] = engine.run()

    runner = threading.Thread(target=archive_and_drop)
    runner.start()
    answers, from_lake = 0, set()
    while runner.is_alive() or answers == 0:
        result = _live(settings, lake, DUCK_AGGREGATE.format(table))
        assert _same(baseline, result.rows[0]), f"answer {answers} differs: {result.rows[0]} vs {baseline}"
        answers += 1
        from_lake.add(result.tables[table]["chunks"])
    runner.join()
    final = _live(settings, lake, DUCK_AGGREGATE.format(table))
    assert _same(baseline, final.rows[0])
    from_lake.add(final.tables[table]["chunks"])
    assert outcome["report"].steps
    # the queries met the run at different points: some saw fewer chunks dropped than others
    print("answers", answers, "chunks from the lake", sorted(from_lake))
    assert len(from_lake) >= 2, f"{answers} answers, chunks from the lake: {sorted(from_lake)}"


def test_native_range_partitions(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events (ts timestamptz NOT NULL, device int4, value float8) "
                     "PARTITION BY RANGE (ts)")
        for month in range(1, 5):
            conn.execute(f"CREATE TABLE public.events_2020_{month:02d} PARTITION OF public.events "
                         f"FOR VALUES FROM ('2020-{month:02d}-01') TO ('2020-{month + 1:02d}-01')")
        conn.execute("CREATE TABLE public.events_hot PARTITION OF public.events "
                     "FOR VALUES FROM ('2025-12-01') TO ('2026-02-01')")
        conn.execute("""INSERT INTO public.events SELECT '2020-01-01'::timestamptz + i * interval '53 minutes', i % 4,
                        (i % 300)::float8 FROM generate_series(0, 3000) i""")
        conn.execute("""INSERT INTO public.events SELECT '2025-12-15'::timestamptz + i * interval '17 minutes', i % 3,
                        (i % 50)::float8 FROM generate_series(0, 500) i""")
        baseline = _baseline(conn, "public.events", "public.events_copy")
    overrides = {"partitioned_tables": ["public.events"]}
    with engine_for(pg_dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        assert not engine.run().failed
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.events").fetchone()[0] == 501
    settings = settings_for(pg_dsn, tmp_path / "lake", **overrides)
    assert _same(baseline, _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format("public.events")).rows[0])


def test_integer_time_hypertable(native_tsdb, tmp_path):
    box = native_tsdb
    table = f"{box.schema}.ticks"
    with box.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (t bigint NOT NULL, device int4 NOT NULL, value float8)")
        conn.execute(f"SELECT create_hypertable('{table}', by_range('t', 1000))")
        conn.execute(f"CREATE FUNCTION {box.schema}.ticks_now() RETURNS bigint LANGUAGE SQL STABLE "
                     "AS $$ SELECT 10000::bigint $$")
        conn.execute(f"SELECT set_integer_now_func('{table}', '{box.schema}.ticks_now')")
        conn.execute(f"INSERT INTO {table} SELECT i * 3, i % 6, (i % 90)::float8 FROM generate_series(0, 3333) i")
        conn.execute(f"CREATE TABLE public.ticks_copy AS SELECT * FROM {table}")
        baseline = conn.execute("SELECT count(*), sum(device), sum(value)::bigint, sum(t), min(t), max(t) "
                                "FROM public.ticks_copy").fetchone()
    overrides = {"ledger_schema": box.ledger, "include": [table], "integer_retention": {table: 5000}}
    with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        report = engine.run()
    assert not report.failed and any(s.step == "drop" and s.outcome == "done" for s in report.steps)
    settings = settings_for(box.dsn, tmp_path / "lake", **overrides)
    live = _live(settings, Lake(settings.lake_url),
                 f"SELECT count(*), sum(device), sum(value)::BIGINT, sum(t), min(t), max(t) FROM {table}")
    assert [int(v) for v in live.rows[0]] == [int(v) for v in baseline]


def test_a_lake_on_azurite(hypertable, azurite_container):
    box, table, baseline, _, overrides = hypertable
    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/live"
    overrides = {**overrides, "lake_connection_string": AZURITE_CONNECTION_STRING}
    with engine_for(box.dsn, lake_url, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    settings = settings_for(box.dsn, lake_url, **overrides)
    lake = Lake(lake_url, AZURITE_CONNECTION_STRING)
    result = _live(settings, lake, DUCK_AGGREGATE.format(table), AZURITE_CONNECTION_STRING)
    assert _same(baseline, result.rows[0]) and result.tables[table]["chunks"] > 0


def test_a_time_filter_scans_only_the_matching_months_of_the_lake(hypertable):
    """One month asked for: the other months' lake scans are never run (DuckDB's EXPLAIN ANALYZE, per operator)."""
    box, table, baseline, lake_dir, overrides = hypertable
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    settings = settings_for(box.dsn, lake_dir, **overrides)
    live = LiveQuery(settings, Lake(settings.lake_url), None)
    try:
        duck = live.open()
        everything = duck.execute(f"EXPLAIN ANALYZE SELECT count(*) FROM {table}").fetchall()[0][1]
        february = duck.execute(f"EXPLAIN ANALYZE SELECT count(*) FROM {table} WHERE ts >= '2020-02-01 00:00:00+00' "
                                "AND ts < '2020-03-01 00:00:00+00'").fetchall()[0][1]
        count = duck.execute(f"SELECT count(*) FROM {table} WHERE ts >= '2020-02-01 00:00:00+00' "
                             "AND ts < '2020-03-01 00:00:00+00'").fetchone()[0]
    finally:
        live.close()
    with box.connect() as conn:
        expected = conn.execute("SELECT count(*) FROM public.metrics_copy WHERE ts >= '2020-02-01' "
                                "AND ts < '2020-03-01'").fetchone()[0]
    assert count == expected > 0
    scans_all, scans_february = everything.count("READ_PARQUET"), february.count("READ_PARQUET")
    print("READ_PARQUET operators", scans_all, scans_february)
    assert scans_all >= 3 and scans_february < scans_all, (scans_all, scans_february)


@pytest.mark.scenario("query --live refuses anything but a read: writes, postgres_execute, ATTACH")
@pytest.mark.parametrize("sql", [
    "DELETE FROM {table}",
    "INSERT INTO {table} VALUES ('2020-01-01', 1, 1)",
    "CALL postgres_execute('tsarchive_pg', 'DELETE FROM {table}')",
    "SELECT * FROM postgres_execute('tsarchive_pg', 'COMMIT; DELETE FROM {table}')",
    "SELECT * FROM postgres_query('tsarchive_pg', 'SELECT 1')",
    "ATTACH 'postgresql://x' AS other (TYPE postgres)",
    "SELECT 1; DELETE FROM {table}",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM postgres_query(''tsarchive_pg'', "
    "''SELECT 1'')'))",
    "SELECT * FROM read_csv('/proc/self/environ')",  # allowed by the parser, refused by DuckDB: files outside the lake
])
def test_a_write_through_live_is_refused(hypertable, sql):
    box, table, baseline, lake_dir, overrides = hypertable
    env = cli_env(box.dsn, lake_dir, ARCHIVER_LEDGER_SCHEMA=box.ledger, ARCHIVER_INCLUDE=table)
    done = subprocess.run([TSARCHIVE, "query", "--live", sql.format(table=table)], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    with box.connect() as conn:
        assert _same(baseline, conn.execute(PG_AGGREGATE.format(table)).fetchone())


def test_check_sql_allows_reads():
    check_sql("SELECT date_trunc('month', ts) AS m, avg(value) FROM s.t GROUP BY 1 ORDER BY 1")
    check_sql("EXPLAIN SELECT count(*) FROM s.t")
    with pytest.raises(ArchiverError, match="postgres_scan"):
        check_sql("SELECT * FROM postgres_scan('host=x', 'public', 't')")


def test_the_cli_answers_in_json_and_an_unreachable_database_is_one_clear_message(hypertable):
    box, table, baseline, lake_dir, overrides = hypertable
    env = cli_env(box.dsn, lake_dir, ARCHIVER_LEDGER_SCHEMA=box.ledger, ARCHIVER_INCLUDE=table)
    done = subprocess.run([TSARCHIVE, "query", "--live", "--json", f"SELECT count(*) AS n FROM {table}"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": baseline[0]}]
    short = subprocess.run([TSARCHIVE, "query", "--live", "--csv", "SELECT count(*) AS n FROM metrics"], env=env,
                           capture_output=True, text=True)  # the bare name, as plain `query` offers it
    assert short.returncode == 0 and short.stdout.splitlines() == ["n", str(baseline[0])], short.stderr

    secret = "s3cr3t-live-password"
    env["ARCHIVER_DATABASE_URL"] = f"postgresql://archiver:{secret}@127.0.0.1:1/postgres?connect_timeout=2"
    done = subprocess.run([TSARCHIVE, "query", "--live", f"SELECT count(*) FROM {table}"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and re.match(r"^error: .*(reach|connect)", done.stderr, re.I)
    assert secret not in done.stderr + done.stdout


def test_the_live_examples_in_docs_querying_run(hypertable):
    """docs/querying.md's --live lines, run against a hypertable of the same shape (ts, device, value)."""
    import shlex
    from pathlib import Path

    box, table, baseline, lake_dir, overrides = hypertable
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    page = (Path(__file__).resolve().parent.parent / "docs" / "querying.md").read_text()
    lines = [line for line in page.splitlines() if line.startswith("tsarchive query --live")]
    assert len(lines) >= 3
    env = cli_env(box.dsn, lake_dir, ARCHIVER_LEDGER_SCHEMA=box.ledger, ARCHIVER_INCLUDE=table)
    for line in lines:
        args = shlex.split(line.replace("public.metrics", table))
        done = subprocess.run([TSARCHIVE, *args[1:]], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip(), (line, done.stderr)
    rollup = subprocess.run([TSARCHIVE, "query", "--live", "--json", f"SELECT count(*) AS n FROM {table}"], env=env,
                            capture_output=True, text=True)
    assert json.loads(rollup.stdout) == [{"n": baseline[0]}]


def test_a_driver_message_never_shows_the_connection_string_or_a_token():
    dsn = "host=db.example.com port=5432 user=archiver password=eyJ0eXAiOi.token.part dbname=metrics sslmode=require"
    url = "postgresql://archiver:pa55word@db.example.com/metrics"
    message = (f'IO Error: Unable to connect to Postgres at "{dsn}": connection refused; also tried {url} '
               "and password=eyJ0eXAiOi.token.part")
    shown = scrub(message, dsn, url)
    assert "eyJ0eXAiOi" not in shown and "pa55word" not in shown and "connection refused" in shown


def test_a_source_table_dropped_altogether_is_its_archive(hypertable):
    """Dropped from the database after its old chunks were archived: --live still shows what the lake holds."""
    box, table, baseline, lake_dir, overrides = hypertable
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    with box.connect() as conn:
        conn.execute(f"DROP TABLE {table}")
        expected = conn.execute(PG_AGGREGATE.format("(SELECT * FROM public.metrics_copy WHERE ts < '2021-01-01') x")
                                ).fetchone()
    settings = settings_for(box.dsn, lake_dir, **overrides)
    result = _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table))
    assert _same(expected, result.rows[0]) and result.tables[table]["chunks"] > 0


def test_a_naive_timestamp_hypertable(native_tsdb, tmp_path):
    """`timestamp without time zone`: archived values come back as the same wall-clock times, hot and cold alike."""
    box = native_tsdb
    table = f"{box.schema}.naive"
    with box.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (ts timestamp NOT NULL, device int4 NOT NULL, value float8)")
        conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '7 days'))")
        conn.execute(f"""INSERT INTO {table} SELECT '2020-01-01'::timestamp + i * interval '41 minutes', i % 5,
                         (i % 321)::float8 FROM generate_series(0, 2999) i""")
        conn.execute(f"""INSERT INTO {table} SELECT '2025-12-22'::timestamp + i * interval '13 minutes', i % 5,
                         (i % 10)::float8 FROM generate_series(0, 299) i""")
        conn.execute(f"CREATE TABLE public.naive_copy AS SELECT * FROM {table}")
        expected = conn.execute("SELECT count(*), sum(device), sum(value)::bigint, min(ts)::text, max(ts)::text, "
                                "count(*) FILTER (WHERE ts >= '2020-01-15' AND ts < '2020-01-20') "
                                "FROM public.naive_copy").fetchone()
    overrides = {"ledger_schema": box.ledger, "include": [table]}
    with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        report = engine.run()
    assert not report.failed and any(s.step == "drop" and s.outcome == "done" for s in report.steps)
    settings = settings_for(box.dsn, tmp_path / "lake", **overrides)
    live = _live(settings, Lake(settings.lake_url),
                 f"SELECT count(*), sum(device), sum(value)::BIGINT, min(ts)::VARCHAR, max(ts)::VARCHAR, "
                 f"count(*) FILTER (WHERE ts >= TIMESTAMP '2020-01-15' AND ts < TIMESTAMP '2020-01-20') FROM {table}")
    assert [str(v) for v in live.rows[0]] == [str(v) for v in expected]


def test_every_archived_type_reads_the_same_cold_as_hot(native_tsdb, tmp_path):
    """The same rows archived (cold) and still in PostgreSQL (hot), column by column through --live: equal, but for
    the numerics DuckDB's postgres scanner reads as DOUBLE on the hot side (docs/querying.md says which)."""
    from .test_types_pg import COLUMNS, ROWS

    box = native_tsdb
    s = box.schema
    with box.connect() as conn:
        conn.execute(f"CREATE TYPE {s}.mood_t AS ENUM ('happy', 'sad')")
        conn.execute(f"CREATE DOMAIN {s}.positive_int AS int4 CHECK (VALUE > 0)")
        columns = COLUMNS.replace("mood_t", f"{s}.mood_t").replace("positive_int", f"{s}.positive_int")
        conn.execute(f"CREATE TABLE {s}.typed ({columns})")
        conn.execute(f"SELECT create_hypertable('{s}.typed', by_range('ts', INTERVAL '7 days'))")
        for row in ROWS:
            conn.execute(f"INSERT INTO {s}.typed VALUES {row}")
            conn.execute(f"INSERT INTO {s}.typed VALUES {row.replace('2020-01-01 00:00', '2025-12-28 00:00', 1)}")
    overrides = {"ledger_schema": box.ledger, "include": [f"{s}.typed"]}
    with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        report = engine.run()
    assert [(step.step, step.outcome) for step in report.steps] == [("archive", "done"), ("drop", "done")]
    settings = settings_for(box.dsn, tmp_path / "lake", **overrides)
    live = LiveQuery(settings, Lake(settings.lake_url), None)
    try:
        duck = live.open()
        names = [r[0] for r in duck.execute(f"DESCRIBE {s}.typed").fetchall() if r[0] != "ts"]
        differ = []
        for name in names:
            cold, hot = (duck.execute(f'SELECT "{name}"::VARCHAR FROM {s}.typed WHERE ts {op} TIMESTAMPTZ '
                                      f"'2023-01-01' ORDER BY ts").fetchall() for op in ("<", ">"))
            assert len(cold) == len(hot) == len(ROWS)
            if cold != hot:
                differ.append(name)
    finally:
        live.close()
    assert len(names) >= 29
    assert differ == ["n", "n50"]  # unconstrained numeric and numeric(50,5): DOUBLE on the hot side, lossy (NaN -> 0)


def test_a_column_added_within_a_month_keeps_its_values(native_tsdb, tmp_path):
    """Two chunks of one month archived before and after ADD COLUMN: the later one's values are read, not NULL."""
    box = native_tsdb
    table = f"{box.schema}.grown"
    overrides = {"ledger_schema": box.ledger, "include": [table]}
    with box.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, device int4 NOT NULL, value float8)")
        conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '7 days'))")
        conn.execute(f"INSERT INTO {table} SELECT '2020-01-01'::timestamptz + i * interval '1 hour', 1, i "
                     "FROM generate_series(0, 99) i")
    with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        assert not engine.run().failed
    with box.connect() as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN extra int4")
        conn.execute(f"INSERT INTO {table} SELECT '2020-01-16'::timestamptz + i * interval '1 hour', 2, i, i + 1 "
                     "FROM generate_series(0, 49) i")
    with engine_for(box.dsn, tmp_path / "lake", now=NOW, **overrides) as engine:
        assert not engine.run().failed
    with box.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # all of it archived and dropped
    settings = settings_for(box.dsn, tmp_path / "lake", **overrides)
    live = _live(settings, Lake(settings.lake_url), f"SELECT count(*), count(extra), sum(extra) FROM {table}")
    assert [int(v) for v in live.rows[0]] == [150, 50, sum(range(1, 51))]


def test_a_chunk_archived_then_dropped_outside_the_archiver_is_a_clear_error(hypertable):
    """Archived, then gone with no drop in the ledger (someone's drop_chunks): --live names it instead of guessing."""
    box, table, baseline, lake_dir, overrides = hypertable
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run(drop=False).failed
    with box.connect() as conn:
        conn.execute(f"SELECT drop_chunks('{table}', older_than => '2020-01-10'::timestamptz)")
    settings = settings_for(box.dsn, lake_dir, **overrides)
    with pytest.raises(ArchiverError, match="records no drop: run `tsarchive run`"):
        _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table))
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed  # the drop step records the chunk as already gone, after the lake re-check
    assert _same(baseline, _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table)).rows[0])


def test_rows_restored_into_their_own_table_are_counted_once(hypertable):
    """An auditor's range restored into the hypertable itself: the rows are live again, the archive no longer
    counts them; and after the next run archives them anew, still once."""
    box, table, baseline, lake_dir, overrides = hypertable
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    env = cli_env(box.dsn, lake_dir, ARCHIVER_LEDGER_SCHEMA=box.ledger, ARCHIVER_INCLUDE=table)
    done = subprocess.run([TSARCHIVE, "restore", "--hypertable", table, "--from", "2020-01-10T00:00:00Z", "--to",
                           "2020-01-20T00:00:00Z", "--into", table, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with box.connect() as conn:
        back = conn.execute(f"SELECT count(*) FROM {table} WHERE ts < '2021-01-01'").fetchone()[0]
    assert back > 0
    settings = settings_for(box.dsn, lake_dir, **overrides)
    assert _same(baseline, _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table)).rows[0])
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed  # the restored rows sit in new, due chunks: archived and dropped again
    with box.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE ts < '2021-01-01'").fetchone()[0] == 0
    assert _same(baseline, _live(settings, Lake(settings.lake_url), DUCK_AGGREGATE.format(table)).rows[0])
