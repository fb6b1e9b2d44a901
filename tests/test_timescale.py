"""TimescaleDB (WASM build over the wire): hypertable catalog, space partitions, compressed chunks, caggs, drops."""

from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq

from shared_code.ledger import JobState
from shared_code.planning import Decision

from .conftest import engine_for
from .helpers import normalise, visible_files

DAYS = 730


def _due_chunks(conn, schema, table, days=DAYS):
    """Chunks wholly older than the cutoff, as drop_chunks(older_than) would pick them."""
    return sorted(r[0] for r in conn.execute(
        "SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_schema = %s AND hypertable_name = %s "
        "AND range_end <= now() - make_interval(days => %s)", (schema, table, days)).fetchall())


def _all_chunks(conn, schema, table):
    return sorted(r[0] for r in conn.execute(
        "SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_schema = %s AND hypertable_name = %s",
        (schema, table)).fetchall())


def test_hypertable_end_to_end(tsdb, tmp_path):
    table = 'Sensor Data-1'  # odd, quoted, mixed case
    qualified = f'{tsdb.schema}."{table}"'
    with tsdb.connect() as conn:
        conn.execute(f"CREATE TABLE {qualified} (ts timestamptz NOT NULL, device int NOT NULL, \"Value\" float8, "
                     "tags jsonb, note text)")
        conn.execute(f"SELECT create_hypertable('{qualified}', by_range('ts', INTERVAL '60 days'))")
        conn.execute(f"SELECT add_dimension('{qualified}', by_hash('device', 2))")
        conn.execute(f"INSERT INTO {qualified} SELECT t, d, d * 1.25 + extract(epoch FROM t) / 1e9, "
                     "jsonb_build_object('d', d), CASE WHEN d = 2 THEN NULL ELSE 'n' END "
                     "FROM generate_series(now() - INTERVAL '900 days', now(), INTERVAL '6 hours') t, generate_series(1, 3) d")
        conn.execute(f"ALTER TABLE {qualified} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')")
        oldest = conn.execute("SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                              "WHERE hypertable_schema = %s ORDER BY range_start LIMIT 1", (tsdb.schema,)).fetchone()[0]
        conn.execute("SELECT compress_chunk(%s::regclass)", (oldest,))
        due = _due_chunks(conn, tsdb.schema, table)
        hot = sorted(set(_all_chunks(conn, tsdb.schema, table)) - set(due))
        assert len(due) >= 4 and hot
        assert conn.execute("SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed AND chunk_name = ANY(%s)",
                            (due,)).fetchone()[0] >= 1
        expected = {name: conn.execute(f"SELECT * FROM _timescaledb_internal.{name}").fetchall() for name in due}
        total_before = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]

    lake = tmp_path / "lake"
    with engine_for(tsdb.dsn, lake, include=[f"{tsdb.schema}.*"], ledger_schema=tsdb.ledger) as engine:
        entries = engine.plan()
        assert sorted(e.chunk.chunk_name for e in entries if e.decision == Decision.DUE) == due
        report = engine.run()
        assert not report.failed, report.failed
        jobs = {j.chunk_name: j for j in engine.ledger.all_jobs()}
        status = {r["table"]: r for r in engine.status()}

    with tsdb.connect() as conn:
        assert _all_chunks(conn, tsdb.schema, table) == hot  # exactly the due chunks are gone
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
        assert "Sensor%20Data-1" in job.lake_paths[0]
    files = visible_files(lake)
    assert files and all(not f.name.startswith(("_", ".")) for f in files)
    row = status[f"{tsdb.schema}.{table}"]
    assert row["dropped"] == len(due) and row["hot"] == len(hot) and row["due"] == 0
    assert row["rows_archived"] == sum(len(r) for r in expected.values())


def test_continuous_aggregate_blocks_drop(tsdb, tmp_path):
    with tsdb.connect() as conn:
        conn.execute(f"CREATE TABLE {tsdb.schema}.raw (ts timestamptz NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{tsdb.schema}.raw', by_range('ts', INTERVAL '90 days'))")
        conn.execute(f"INSERT INTO {tsdb.schema}.raw SELECT t, 1 FROM generate_series(now() - INTERVAL '1000 days', now(), "
                     "INTERVAL '1 day') t")
        conn.execute(f"CREATE MATERIALIZED VIEW {tsdb.schema}.daily WITH (timescaledb.continuous) AS "
                     f"SELECT time_bucket('1 day', ts) AS day, sum(v) FROM {tsdb.schema}.raw GROUP BY 1 WITH NO DATA")
        conn.execute(f"CALL refresh_continuous_aggregate('{tsdb.schema}.daily', NULL, now() - INTERVAL '1 day')")
        conn.execute(f"SELECT add_continuous_aggregate_policy('{tsdb.schema}.daily', start_offset => INTERVAL '800 days', "
                     "end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 day')")
        due = _due_chunks(conn, tsdb.schema, "raw")
        window_start = datetime.now(UTC) - timedelta(days=800)
        ends = dict(conn.execute(
            "SELECT chunk_name, range_end FROM timescaledb_information.chunks WHERE hypertable_schema = %s "
            "AND hypertable_name = 'raw'", (tsdb.schema,)).fetchall())
    should_block = sorted(n for n in due if ends[n] > window_start)
    should_drop = sorted(n for n in due if ends[n] <= window_start)
    assert should_block and should_drop

    with engine_for(tsdb.dsn, tmp_path / "lake", include=[f"{tsdb.schema}.*"], ledger_schema=tsdb.ledger) as engine:
        entries = engine.plan()
        assert not [e for e in entries if e.chunk.table_schema.startswith("_timescaledb")]
        blocked = {e.chunk.chunk_name: e.reason for e in entries if e.decision == Decision.BLOCKED}
        assert sorted(blocked) == should_block
        assert all("refresh window" in r and "daily" in r for r in blocked.values())
        assert not engine.run().failed
        states = {j.chunk_name: j for j in engine.ledger.all_jobs()}
    with tsdb.connect() as conn:
        left = set(_all_chunks(conn, tsdb.schema, "raw"))
    assert set(should_block) <= left and not (set(should_drop) & left)
    assert all(states[n].state == JobState.BLOCKED and "refresh window" in states[n].reason for n in should_block)


def test_integer_time_hypertable_skipped_unless_configured(tsdb, tmp_path):
    with tsdb.connect() as conn:
        conn.execute(f"CREATE TABLE {tsdb.schema}.ticks (t bigint NOT NULL, v int)")
        conn.execute(f"SELECT create_hypertable('{tsdb.schema}.ticks', by_range('t', 1000))")
        conn.execute(f"CREATE FUNCTION {tsdb.schema}.ticks_now() RETURNS bigint LANGUAGE sql STABLE AS "
                     f"'SELECT coalesce(max(t), 0) FROM {tsdb.schema}.ticks'")
        conn.execute(f"SELECT set_integer_now_func('{tsdb.schema}.ticks', '{tsdb.schema}.ticks_now')")
        conn.execute(f"INSERT INTO {tsdb.schema}.ticks SELECT g, g FROM generate_series(0, 9999) g")
    common = {"include": [f"{tsdb.schema}.*"], "ledger_schema": tsdb.ledger}
    with engine_for(tsdb.dsn, tmp_path / "lake", **common) as engine:
        entries = engine.plan()
        assert entries and all(e.decision == Decision.SKIPPED for e in entries)
        assert "ARCHIVER_INTEGER_RETENTION" in entries[0].reason
    with engine_for(tsdb.dsn, tmp_path / "lake", integer_retention={f"{tsdb.schema}.ticks": 5000}, **common) as engine:
        report = engine.run()
        assert not report.failed
        dropped = [j for j in engine.ledger.all_jobs() if j.state == JobState.DROPPED]
    # integer_now = 9999, cutoff 4999: chunks [0,1000) .. [3000,4000) end at or before it
    assert sorted(j.range_end for j in dropped) == [1000, 2000, 3000, 4000]
    with tsdb.connect() as conn:
        assert conn.execute(f"SELECT min(t) FROM {tsdb.schema}.ticks").fetchone()[0] == 4000
    assert all("range=" in j.lake_paths[0] for j in dropped)


def test_archived_chunk_is_kept_when_a_cagg_starts_needing_it(tsdb, tmp_path):
    with tsdb.connect() as conn:
        conn.execute(f"CREATE TABLE {tsdb.schema}.raw (ts timestamptz NOT NULL, v float8)")
        conn.execute(f"SELECT create_hypertable('{tsdb.schema}.raw', by_range('ts', INTERVAL '90 days'))")
        conn.execute(f"INSERT INTO {tsdb.schema}.raw SELECT t, 1 FROM generate_series(now() - INTERVAL '1000 days', "
                     "now(), INTERVAL '1 day') t")
    common = {"include": [f"{tsdb.schema}.*"], "ledger_schema": tsdb.ledger}
    with engine_for(tsdb.dsn, tmp_path / "lake", **common) as engine:
        assert not engine.run(drop=False).failed
        archived = engine.ledger.all_jobs()
        assert archived and all(j.state == JobState.ARCHIVED for j in archived)
        with tsdb.connect() as conn:  # a continuous aggregate that refreshes everything appears before the drop
            conn.execute(f"CREATE MATERIALIZED VIEW {tsdb.schema}.daily WITH (timescaledb.continuous) AS "
                         f"SELECT time_bucket('1 day', ts) AS day, sum(v) FROM {tsdb.schema}.raw GROUP BY 1 WITH NO DATA")
            conn.execute(f"SELECT add_continuous_aggregate_policy('{tsdb.schema}.daily', start_offset => NULL, "
                         "end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 day')")
        report = engine.run()
        assert not report.failed
        assert {s.outcome for s in report.steps if s.step == "drop"} == {"skipped"}
        jobs = engine.ledger.all_jobs()
    assert all(j.state == JobState.ARCHIVED and "whole range" in (j.reason or "") for j in jobs)
    with tsdb.connect() as conn:
        left = set(_all_chunks(conn, tsdb.schema, "raw"))
    assert {j.chunk_name for j in jobs} <= left


def test_integer_hypertable_with_a_continuous_aggregate_is_kept(tsdb, tmp_path):
    with tsdb.connect() as conn:
        conn.execute(f"CREATE TABLE {tsdb.schema}.ticks (t bigint NOT NULL, v int)")
        conn.execute(f"SELECT create_hypertable('{tsdb.schema}.ticks', by_range('t', 1000))")
        conn.execute(f"CREATE FUNCTION {tsdb.schema}.ticks_now() RETURNS bigint LANGUAGE sql STABLE AS "
                     f"'SELECT coalesce(max(t), 0) FROM {tsdb.schema}.ticks'")
        conn.execute(f"SELECT set_integer_now_func('{tsdb.schema}.ticks', '{tsdb.schema}.ticks_now')")
        conn.execute(f"INSERT INTO {tsdb.schema}.ticks SELECT g, g FROM generate_series(0, 9999) g")
        conn.execute(f"CREATE MATERIALIZED VIEW {tsdb.schema}.per_k WITH (timescaledb.continuous) AS "
                     f"SELECT time_bucket(1000, t) AS k, sum(v) FROM {tsdb.schema}.ticks GROUP BY 1 WITH NO DATA")
    common = {"include": [f"{tsdb.schema}.*"], "ledger_schema": tsdb.ledger,
              "integer_retention": {f"{tsdb.schema}.ticks": 5000}}
    with engine_for(tsdb.dsn, tmp_path / "lake", **common) as engine:
        entries = [e for e in engine.plan() if e.chunk.table_name == "ticks" and e.decision != Decision.HOT]
        assert entries and all(e.decision == Decision.BLOCKED and "integer-time" in e.reason for e in entries)
        assert not engine.run().failed
    with tsdb.connect() as conn:
        assert conn.execute(f"SELECT min(t) FROM {tsdb.schema}.ticks").fetchone()[0] == 0
