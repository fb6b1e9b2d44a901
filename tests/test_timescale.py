"""TimescaleDB (WASM build over the wire): hypertable catalog, space partitions, compressed chunks, caggs, drops."""

from datetime import datetime, timedelta

import pyarrow.parquet as pq

from shared_code.ledger import JobState
from shared_code.planning import Decision

from .conftest import engine_for
from .helpers import normalise, visible_files

DAYS = 730


def _due_chunks(conn, schema, table, now: datetime, days=DAYS) -> list[str]:
    """Chunks wholly older than the cutoff (`now` - days), as drop_chunks(older_than) would pick them."""
    return sorted(name for name, _ in _due_chunk_ends(conn, schema, table, now, days))


def _due_chunk_ends(conn, schema, table, now: datetime, days=DAYS) -> list[tuple[str, datetime]]:
    """(chunk name, range_end) of the due chunks, oldest end first."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT chunk_name, range_end FROM timescaledb_information.chunks WHERE hypertable_schema = %s "
        "AND hypertable_name = %s AND range_end <= %s::timestamptz ORDER BY range_end, chunk_name",
        (schema, table, now - timedelta(days=days))).fetchall()]


def _as_interval(delta: timedelta) -> str:
    """An interval literal of hours, minutes and (micro)seconds only: `now - it` is exact in any session time zone."""
    assert delta >= timedelta(0)
    micros = delta // timedelta(microseconds=1)
    seconds, micros = divmod(micros, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    return f"{hours}:{seconds // 60:02d}:{seconds % 60:02d}.{micros:06d}"


def _all_chunks(conn, schema, table):
    return sorted(r[0] for r in conn.execute(
        "SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_schema = %s AND hypertable_name = %s",
        (schema, table)).fetchall())


def test_hypertable_end_to_end(timescale, tmp_path, sample_now):
    now = sample_now
    table = 'Sensor Data-1'  # odd, quoted, mixed case
    qualified = f'{timescale.schema}."{table}"'
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {qualified} (ts timestamptz NOT NULL, device int NOT NULL, \"Value\" float8, "
                     "tags jsonb, note text)")
        conn.execute(f"SELECT create_hypertable('{qualified}', by_range('ts', INTERVAL '60 days'))")
        conn.execute(f"SELECT add_dimension('{qualified}', by_hash('device', 2))")
        conn.execute(f"INSERT INTO {qualified} SELECT t, d, d * 1.25 + extract(epoch FROM t) / 1e9, "
                     "jsonb_build_object('d', d), CASE WHEN d = 2 THEN NULL ELSE 'n' END FROM generate_series("
                     "%(now)s::timestamptz - INTERVAL '900 days', %(now)s::timestamptz, INTERVAL '6 hours') t, "
                     "generate_series(1, 3) d", {"now": now})
        conn.execute(f"ALTER TABLE {qualified} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')")
        oldest = conn.execute("SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                              "WHERE hypertable_schema = %s ORDER BY range_start LIMIT 1", (timescale.schema,)).fetchone()[0]
        conn.execute("SELECT compress_chunk(%s::regclass)", (oldest,))
        due = _due_chunks(conn, timescale.schema, table, now)
        hot = sorted(set(_all_chunks(conn, timescale.schema, table)) - set(due))
        assert len(due) >= 4 and hot
        assert conn.execute("SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed AND chunk_name = ANY(%s)",
                            (due,)).fetchone()[0] >= 1
        expected = {name: conn.execute(f"SELECT * FROM _timescaledb_internal.{name}").fetchall() for name in due}
        total_before = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]

    lake = tmp_path / "lake"
    with engine_for(timescale.dsn, lake, now=now, include=[f"{timescale.schema}.*"], ledger_schema=timescale.ledger) as engine:
        entries = engine.plan()
        assert sorted(e.chunk.chunk_name for e in entries if e.decision == Decision.DUE) == due
        report = engine.run()
        assert not report.failed, report.failed
        jobs = {j.chunk_name: j for j in engine.ledger.all_jobs()}
        status = {r["table"]: r for r in engine.status()}

    with timescale.connect() as conn:
        assert _all_chunks(conn, timescale.schema, table) == hot  # exactly the due chunks are gone
        total_after = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]
    assert total_after == total_before - sum(len(rows) for rows in expected.values())
    assert set(jobs) == set(due)
    for name, rows in expected.items():
        job = jobs[name]
        assert job.state == JobState.DROPPED
        archived = []
        for path in job.lake_paths:
            archived.extend(tuple(normalise(v) for v in r.values()) for r in pq.read_table(lake / path).to_pylist())
        assert sorted(archived, key=repr) == sorted((tuple(normalise(v) for v in r) for r in rows), key=repr)
        assert job.lake_paths[0].startswith(f"{timescale.schema}.Sensor~20Data-1/year=")
    files = visible_files(lake)
    assert files and all(not f.name.startswith(("_", ".")) for f in files)
    row = status[f"{timescale.schema}.{table}"]
    assert row["dropped"] == len(due) and row["hot"] == len(hot) and row["due"] == 0
    assert row["rows_archived"] == sum(len(r) for r in expected.values())


def test_continuous_aggregate_blocks_drop(timescale, tmp_path, sample_now):
    """A policy window starting exactly at a due chunk's end: chunks ending at or before it drop, the newer due one stays.

    The window is derived from the real chunk boundaries (90-day chunks, 730-day retention), not a fixed offset, so
    some due chunk always ends inside it and another outside it, whatever `now` is.
    """
    now = sample_now
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {timescale.schema}.raw (ts timestamptz NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{timescale.schema}.raw', by_range('ts', INTERVAL '90 days'))")
        conn.execute(f"INSERT INTO {timescale.schema}.raw SELECT t, 1 FROM generate_series(%(now)s::timestamptz - "
                     "INTERVAL '1000 days', %(now)s::timestamptz, INTERVAL '1 day') t", {"now": now})
        conn.execute(f"CREATE MATERIALIZED VIEW {timescale.schema}.daily WITH (timescaledb.continuous) AS "
                     f"SELECT time_bucket('1 day', ts) AS day, sum(v) FROM {timescale.schema}.raw GROUP BY 1 WITH NO DATA")
        conn.execute(f"CALL refresh_continuous_aggregate('{timescale.schema}.daily', NULL, %s::timestamptz - INTERVAL '1 day')",
                     (now,))
        due = _due_chunk_ends(conn, timescale.schema, "raw", now)
        assert len(due) >= 2, due  # 1000 days of data, 90-day chunks: the 270 days before the cutoff hold 3 boundaries
        window_start = due[-2][1]  # the second-newest due chunk's end
        start_offset = _as_interval(now - window_start)
        conn.execute(f"SELECT add_continuous_aggregate_policy('{timescale.schema}.daily', start_offset => %s::interval, "
                     "end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 day')", (start_offset,))
        assert conn.execute("SELECT %s::timestamptz - %s::interval", (now, start_offset)).fetchone()[0] == window_start
        hot = set(_all_chunks(conn, timescale.schema, "raw")) - {name for name, _ in due}
    should_block = sorted(name for name, end in due if end > window_start)
    should_drop = sorted(name for name, end in due if end <= window_start)
    assert should_block == [due[-1][0]] and len(should_drop) == len(due) - 1 and hot

    with engine_for(timescale.dsn, tmp_path / "lake", now=now, include=[f"{timescale.schema}.*"],
                    ledger_schema=timescale.ledger) as engine:
        entries = engine.plan()
        assert not [e for e in entries if e.chunk.table_schema.startswith("_timescaledb")]
        blocked = {e.chunk.chunk_name: e.reason for e in entries if e.decision == Decision.BLOCKED}
        assert sorted(blocked) == should_block
        assert sorted(e.chunk.chunk_name for e in entries if e.decision == Decision.DUE) == should_drop
        assert all("refresh window" in r and "daily" in r and window_start.isoformat() in r for r in blocked.values())
        assert not engine.run().failed
        states = {j.chunk_name: j for j in engine.ledger.all_jobs()}
    with timescale.connect() as conn:
        left = set(_all_chunks(conn, timescale.schema, "raw"))
    assert left == set(should_block) | hot
    assert all(states[n].state == JobState.BLOCKED and "refresh window" in states[n].reason for n in should_block)
    assert all(states[n].state == JobState.DROPPED for n in should_drop)


def _make_ticks(conn, schema: str) -> None:
    """An integer-time hypertable (1000-unit chunks, 10,000 rows) with its integer_now function."""
    conn.execute(f"CREATE TABLE {schema}.ticks (t bigint NOT NULL, v int)")
    conn.execute(f"SELECT create_hypertable('{schema}.ticks', by_range('t', 1000))")
    conn.execute(f"CREATE FUNCTION {schema}.ticks_now() RETURNS bigint LANGUAGE sql STABLE AS "
                 f"'SELECT coalesce(max(t), 0) FROM {schema}.ticks'")
    conn.execute(f"SELECT set_integer_now_func('{schema}.ticks', '{schema}.ticks_now')")
    conn.execute(f"INSERT INTO {schema}.ticks SELECT g, g FROM generate_series(0, 9999) g")


def test_integer_time_hypertable_skipped_unless_configured(timescale, tmp_path):
    with timescale.connect() as conn:
        _make_ticks(conn, timescale.schema)
    common = {"include": [f"{timescale.schema}.*"], "ledger_schema": timescale.ledger}
    with engine_for(timescale.dsn, tmp_path / "lake", **common) as engine:
        entries = engine.plan()
        assert entries and all(e.decision == Decision.SKIPPED for e in entries)
        assert "ARCHIVER_INTEGER_RETENTION" in entries[0].reason
    with engine_for(timescale.dsn, tmp_path / "lake", integer_retention={f"{timescale.schema}.ticks": 5000}, **common) as engine:
        report = engine.run()
        assert not report.failed
        dropped = [j for j in engine.ledger.all_jobs() if j.state == JobState.DROPPED]
    # integer_now = 9999, cutoff 4999: chunks [0,1000) .. [3000,4000) end at or before it
    assert sorted(j.range_end for j in dropped) == [1000, 2000, 3000, 4000]
    with timescale.connect() as conn:
        assert conn.execute(f"SELECT min(t) FROM {timescale.schema}.ticks").fetchone()[0] == 4000
    assert all(f"/range_start={j.range_start}/" in j.lake_paths[0] for j in dropped)


def test_archived_chunk_is_kept_when_a_cagg_starts_needing_it(timescale, tmp_path, test_now):
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {timescale.schema}.raw (ts timestamptz NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{timescale.schema}.raw', by_range('ts', INTERVAL '90 days'))")
        conn.execute(f"INSERT INTO {timescale.schema}.raw SELECT t, 1 FROM generate_series(%(now)s::timestamptz - "
                     "INTERVAL '1000 days', %(now)s::timestamptz, INTERVAL '1 day') t", {"now": test_now})
        due = _due_chunks(conn, timescale.schema, "raw", test_now)
    common = {"include": [f"{timescale.schema}.*"], "ledger_schema": timescale.ledger}
    with engine_for(timescale.dsn, tmp_path / "lake", now=test_now, **common) as engine:
        assert not engine.run(drop=False).failed
        archived = engine.ledger.all_jobs()
        assert due and sorted(j.chunk_name for j in archived) == due
        assert all(j.state == JobState.ARCHIVED for j in archived)
        with timescale.connect() as conn:  # a continuous aggregate that refreshes everything appears before the drop
            conn.execute(f"CREATE MATERIALIZED VIEW {timescale.schema}.daily WITH (timescaledb.continuous) AS "
                         f"SELECT time_bucket('1 day', ts) AS day, sum(v) FROM {timescale.schema}.raw GROUP BY 1 WITH NO DATA")
            conn.execute(f"SELECT add_continuous_aggregate_policy('{timescale.schema}.daily', start_offset => NULL, "
                         "end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 day')")
        report = engine.run()
        assert not report.failed
        assert {s.outcome for s in report.steps if s.step == "drop"} == {"skipped"}
        jobs = engine.ledger.all_jobs()
    assert all(j.state == JobState.ARCHIVED and "whole range" in (j.reason or "") for j in jobs)
    with timescale.connect() as conn:
        left = set(_all_chunks(conn, timescale.schema, "raw"))
    assert {j.chunk_name for j in jobs} <= left


def test_integer_hypertable_with_a_continuous_aggregate_is_kept(timescale, tmp_path):
    with timescale.connect() as conn:
        _make_ticks(conn, timescale.schema)
        conn.execute(f"CREATE MATERIALIZED VIEW {timescale.schema}.per_k WITH (timescaledb.continuous) AS "
                     f"SELECT time_bucket(1000, t) AS k, sum(v) FROM {timescale.schema}.ticks GROUP BY 1 WITH NO DATA")
    common = {"include": [f"{timescale.schema}.*"], "ledger_schema": timescale.ledger,
              "integer_retention": {f"{timescale.schema}.ticks": 5000}}
    with engine_for(timescale.dsn, tmp_path / "lake", **common) as engine:
        entries = [e for e in engine.plan() if e.chunk.table_name == "ticks" and e.decision != Decision.HOT]
        assert entries and all(e.decision == Decision.BLOCKED and "integer-time" in e.reason for e in entries)
        assert not engine.run().failed
    with timescale.connect() as conn:
        assert conn.execute(f"SELECT min(t) FROM {timescale.schema}.ticks").fetchone()[0] == 0


def test_multidimensional_arrays_archive_on_timescaledb(timescale, tmp_path, test_now):
    table = f"{timescale.schema}.grids"
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, m int[])")
        conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '7 days'))")
        conn.execute(f"INSERT INTO {table} VALUES ('2020-01-10', '{{{{1,2}},{{3,4}}}}'), ('2020-01-11', '{{5,6}}'), "
                     "('2020-01-12', '[0:1]={7,8}')")
    lake = tmp_path / "lake"
    with engine_for(timescale.dsn, lake, now=test_now, include=[f"{timescale.schema}.*"],
                    ledger_schema=timescale.ledger) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        job = engine.ledger.all_jobs()[0]
    rows = sorted(pq.read_table(lake / job.lake_paths[0]).to_pylist(), key=lambda r: r["ts"])
    assert [(r["m"], r["m__pg_text"]) for r in rows] == [(None, "{{1,2},{3,4}}"), ([5, 6], None), (None, "[0:1]={7,8}")]


def test_one_hypertable_read_from_the_catalog_matches_the_information_views(timescale):
    """The drop asks `catalog.hypertable` per job (TimescaleDB's catalog tables); the planner lists them through the
    information views: the two must agree, time type and integer_now function included."""
    import psycopg

    from shared_code.database import catalog

    s = timescale.schema
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {s}.spaced (ts timestamptz NOT NULL, device int4 NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{s}.spaced', 'ts', chunk_time_interval => INTERVAL '1 day')")
        conn.execute(f"SELECT add_dimension('{s}.spaced', 'device', number_partitions => 2)")
        conn.execute(f"CREATE TABLE {s}.ticks (t bigint NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{s}.ticks', 't', chunk_time_interval => 1000)")
        conn.execute(f"CREATE FUNCTION {s}.ticks_now() RETURNS bigint LANGUAGE SQL STABLE AS $$ SELECT 1::bigint $$")
        conn.execute(f"SELECT set_integer_now_func('{s}.ticks', '{s}.ticks_now')")
    with psycopg.connect(timescale.dsn, autocommit=True) as conn:
        listed = [h for h in catalog.user_hypertables(conn) if h.schema == s]
        assert {h.name for h in listed} == {"spaced", "ticks"}
        assert [catalog.hypertable(conn, h.schema, h.name) for h in listed] == listed
        assert catalog.hypertable(conn, s, "missing") is None
