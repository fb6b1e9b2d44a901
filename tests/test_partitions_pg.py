"""Native range partitions on real PostgreSQL 15: archive, verify, drop; default partition never archived."""

import json

import psycopg
import pyarrow.parquet as pq

from shared_code.ledger import JobState
from shared_code.storage.manifest import PARQUET_KEY, Manifest

from .conftest import engine_for
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions, normalise, rows_of, visible_files


def test_partitions_archived_verified_dropped(pg_dsn, tmp_path, sample_now):
    now = sample_now
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, now=now)
        due = due_partitions(conn, "public.events", now=now)
        assert len(due) >= 3
        expected = {name: rows_of(conn, f"public.{name}") for name in due}
        before = conn.execute("SELECT count(*) FROM public.events").fetchone()[0]
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=now, partitioned_tables=["public.events"]) as engine:
        assert sorted(e.chunk.chunk_name for e in engine.plan() if e.decision == "due") == due
        report = engine.run()
    assert not report.failed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        remaining = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'public.events'::regclass").fetchall()}
        after = conn.execute("SELECT count(*) FROM public.events").fetchone()[0]
    assert remaining.isdisjoint(due)
    assert "events_default" in remaining
    assert after == before - sum(len(rows) for rows in expected.values())

    jobs = {j.chunk_name: j for j in ledger_jobs(pg_dsn)}
    assert set(jobs) == set(due)
    for name, rows in expected.items():
        job = jobs[name]
        assert job.state == JobState.DROPPED and job.row_count == len(rows)
        table = pq.read_table(lake / job.lake_paths[0])
        archived = sorted(tuple(normalise(v) for v in r.values()) for r in table.to_pylist())
        assert archived == sorted(tuple(normalise(v) for v in r) for r in rows)
        manifest = Manifest.from_json((lake / job.manifest_path).read_text())
        assert manifest.rows == len(rows) and manifest.files[0].sha256 == job.checksums[job.lake_paths[0]]
        embedded = json.loads(pq.read_metadata(lake / job.lake_paths[0]).metadata[PARQUET_KEY])
        assert embedded["chunk_name"] == name and embedded["source_kind"] == "partition"
        assert [c["pg_type"] for c in embedded["columns"]] == ["timestamp with time zone", "integer",
                                                               "double precision", "text"]
    names = [p.name for p in visible_files(lake)]
    assert len(names) == len(due) and all(n.endswith(".parquet") for n in names)


def test_second_run_is_a_no_op(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26, now=test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=["public.events"]) as engine:
        first = engine.run()
        second = engine.run()
    assert [s for s in first.steps if s.outcome == "done"]
    assert second.steps == []
    assert all(j.attempts == 1 for j in ledger_jobs(pg_dsn))


def test_no_drop_then_drop(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        due = due_partitions(conn, "public.events", now=test_now)
    assert due
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=["public.events"]) as engine:
        engine.run(drop=False)
        assert {j.state for j in ledger_jobs(pg_dsn)} == {JobState.ARCHIVED}
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert all(conn.execute("SELECT to_regclass(%s)", (f"public.{n}",)).fetchone()[0] for n in due)
        engine.run()
    assert {j.state for j in ledger_jobs(pg_dsn)} == {JobState.DROPPED}


def test_dry_run_writes_nothing(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=["public.events"], dry_run=True) as engine:
        report = engine.run()
    assert report.dry_run and any(e.decision == "due" for e in report.planned)
    assert visible_files(lake) == [] if lake.exists() else True
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('archiver.jobs')").fetchone()[0] is None


def test_large_chunk_split_into_parts(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (ts timestamptz NOT NULL, payload text) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE big_old PARTITION OF big FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO big SELECT '2020-01-01'::timestamptz + g * interval '1 second', "
                     "md5(g::text) || md5((g*7)::text) FROM generate_series(1, 60000) g")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.big"], max_file_bytes=1024 * 1024,
                    row_group_rows=5000, batch_size_bytes=256 * 1024) as engine:
        assert not engine.run().failed
    job = ledger_jobs(pg_dsn)[0]
    assert len(job.lake_paths) > 1
    assert [p.rsplit("-", 1)[-1] for p in job.lake_paths] == [f"p{i:03d}.parquet" for i in range(len(job.lake_paths))]
    total = 0
    for path in job.lake_paths:
        meta = pq.read_metadata(lake / path)
        total += meta.num_rows
        assert all(meta.row_group(i).num_rows <= 5000 for i in range(meta.num_row_groups))
        stats = meta.row_group(0).column(0).statistics
        assert stats is not None and stats.has_min_max
    assert total == 60000 == job.row_count
