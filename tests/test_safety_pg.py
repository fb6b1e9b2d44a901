"""Safety on real PostgreSQL 15: late changes, concurrent runs, crashes at every step, locks, corrupt archives."""

import json
import subprocess

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shared_code.faults import CRASH_POINTS
from shared_code.ledger import JobState

from .conftest import TSARCHIVE, cli_env, engine_for
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions, normalise, rows_of, visible_files, wait_session_gone

PARENT = "public.events"


def _oldest(conn, now) -> str:
    return due_partitions(conn, PARENT, now=now)[0]


@pytest.mark.parametrize("change", ["insert", "update", "delete"])
@pytest.mark.scenario(
    'A late insert, update or delete between archive and drop: seen by the drop check, re-archived, '
    'nothing lost')
def test_late_change_between_archive_and_drop_is_not_lost(pg_dsn, tmp_path, change, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        target = _oldest(conn, test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as engine:
        engine.run(drop=False)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            if change == "insert":
                conn.execute(f"INSERT INTO {target} SELECT min(ts) + interval '1 minute', 99, -1, 'late' FROM {target}")
            elif change == "update":
                conn.execute(f"UPDATE {target} SET note = 'changed' WHERE device = 1")
            else:
                conn.execute(f"DELETE FROM {target} WHERE device = 2")
            final_rows = rows_of(conn, target)
        report = engine.run()
    assert not report.failed
    job = next(j for j in ledger_jobs(pg_dsn) if j.chunk_name == target)
    assert job.state == JobState.DROPPED and job.attempts == 2
    archived = sorted(tuple(normalise(v) for v in r.values()) for r in pq.read_table(lake / job.lake_paths[0]).to_pylist())
    assert archived == sorted(tuple(normalise(v) for v in r) for r in final_rows)
    # one Delta commit replaced the earlier version, whose file is gone: readers see the chunk's rows once
    replacing = DeltaTable(str(lake / "public.events")).history(limit=1)[0]["tsarchive"]
    assert replacing["job_id"] == job.id and len(replacing["replaces"]) == 1
    assert [f"public.events/{f['path']}" for f in replacing["files"]] == job.lake_paths
    assert len([p for p in visible_files(lake) if f"-j{job.id}-" in p.name]) == 1


@pytest.mark.scenario('Two planners at once: a chunk re-planned from a stale catalog read is retired, not failed')
def test_a_twin_planned_from_a_stale_catalog_read_is_retired_not_failed(pg_dsn, tmp_path):
    """Two planners at once: one records a chunk the other has just archived and dropped (its INSERT waited on the
    dropping row). Archiving that twin finds the chunk gone and the earlier job dropped: the twin is retired (it wrote
    nothing), the step is skipped, nothing fails, one job per chunk stays."""
    from datetime import UTC, datetime

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE twin (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE twin_2020_01 PARTITION OF twin FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO twin SELECT '2020-01-01'::timestamptz + i * interval '1 hour', i FROM generate_series(0, 99) i")
    with engine_for(pg_dsn, tmp_path / "lake", now=datetime(2026, 1, 1, tzinfo=UTC),
                    partitioned_tables=["public.twin"]) as engine:
        assert not engine.run().failed
        (first,) = engine.ledger.all_jobs()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the stale plan's record, as the race leaves it
            conn.execute("CREATE TABLE twin_2020_01 (LIKE twin)")
            (twin,) = engine.ledger.record_many([(first.chunk, JobState.PLANNED, "")])
            conn.execute("DROP TABLE twin_2020_01")
        result = engine.archive(twin.id)
        assert (result.outcome, result.detail) == ("skipped", f"already archived and dropped by job {first.id}")
        assert [j.id for j in engine.ledger.all_jobs()] == [first.id]


@pytest.mark.scenario('Two runs at once: each chunk archived once')
def test_two_concurrent_runs_archive_each_chunk_once(pg_dsn, tmp_path):
    # The CLI reads the real clock, so the data is built around the real time (monthly bounds: date-independent).
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=36, rows_per_month=2000)
        due = due_partitions(conn, PARENT)
    lake = tmp_path / "lake"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES=PARENT)
    subprocess.run([TSARCHIVE, "init"], env=env, check=True, capture_output=True)
    procs = [subprocess.Popen([TSARCHIVE, "run", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    archived_by = [{s["job_id"] for s in json.loads(out)["steps"] if s["step"] == "archive" and s["outcome"] == "done"}
                   for out, _ in outputs]
    assert archived_by[0].isdisjoint(archived_by[1])
    jobs = ledger_jobs(pg_dsn)
    assert len(archived_by[0] | archived_by[1]) == len(due) == len(jobs)
    assert all(j.state == JobState.DROPPED and j.attempts == 1 for j in jobs)
    assert DeltaTable(str(lake / PARENT)).version() == len(due) - 1  # one commit per chunk, none lost


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.scenario('SIGKILL at each step of archive and drop, then a rerun: converges, nothing lost or duplicated')
def test_crash_at_each_step_then_rerun_converges(pg_dsn, tmp_path, point):
    # The CLI reads the real clock, so the data is built around the real time (monthly bounds: date-independent).
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, PARENT)
        expected = {name: rows_of(conn, f"public.{name}") for name in due}
    lake, vault = tmp_path / "lake", tmp_path / "vault"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES=PARENT, ARCHIVER_VAULT_URL=vault.as_uri())
    crashed = subprocess.run([TSARCHIVE, "run"], env={**env, "TSARCHIVE_CRASH_AT": point}, capture_output=True, text=True)
    assert crashed.returncode == 137, crashed.stderr
    rerun = subprocess.run([TSARCHIVE, "run", "--json"], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    jobs = {j.chunk_name: j for j in ledger_jobs(pg_dsn)}
    assert set(jobs) == set(due)
    for name, rows in expected.items():
        job = jobs[name]
        assert job.state == JobState.DROPPED, (name, job.state, job.last_error)
        archived = sorted(tuple(normalise(v) for v in r.values()) for r in pq.read_table(lake / job.lake_paths[0]).to_pylist())
        assert archived == sorted(tuple(normalise(v) for v in r) for r in rows)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in due:
            assert conn.execute("SELECT to_regclass(%s)", (f"public.{name}",)).fetchone()[0] is None
    assert len(visible_files(lake)) == len(due)  # no duplicate or partial file is visible
    assert not [p for p in (lake / PARENT / "_tsarchive" / "staging").rglob("*") if p.is_file()]  # crash leftovers gone
    live = pa.table(DeltaTable(str(lake / PARENT)).get_add_actions(flatten=True)).column("path").to_pylist()
    assert sorted(f"{PARENT}/{p}" for p in live) == sorted(p for j in jobs.values() for p in j.lake_paths)
    for job in jobs.values():  # every drop had its immutable copy sealed first, byte for byte
        assert (vault / job.vault_manifest).is_file()
        assert all((vault / "data" / p).read_bytes() == (lake / p).read_bytes() for p in job.lake_paths)


@pytest.mark.scenario(
    'A long-running reader holds the chunk at drop time: a bounded wait, the job stays archived with '
    'the reason, the next run drops it')
def test_drop_waits_for_lock_then_gives_up_cleanly(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        target = _oldest(conn, test_now)
    lake = tmp_path / "lake"
    holder = psycopg.connect(pg_dsn)
    holder.execute(f"LOCK TABLE {target} IN ACCESS SHARE MODE")  # a long-running reader
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT], lock_timeout_ms=100, drop_retries=1) as engine:
        report = engine.run()
        failed = [s for s in report.failed if s.step == "drop"]
        assert len(failed) == 1 and "could not lock" in failed[0].detail
        job = next(j for j in ledger_jobs(pg_dsn) if j.chunk_name == target)
        assert job.state == JobState.ARCHIVED and "could not lock" in job.last_error
        holder.rollback()
        holder.close()
        assert not engine.run().failed
    job = next(j for j in ledger_jobs(pg_dsn) if j.chunk_name == target)
    assert job.state == JobState.DROPPED


def test_drop_refuses_corrupt_archive_and_rearchives(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        target = _oldest(conn, test_now)
        rows = rows_of(conn, target)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as engine:
        engine.run(drop=False)
        job = next(j for j in ledger_jobs(pg_dsn) if j.chunk_name == target)
        path = lake / job.lake_paths[0]
        path.write_bytes(path.read_bytes()[:-20] + b"corrupted-footer-xyz")
        bad = engine.verify([job.id])
        assert bad[0].outcome == "failed" and "checksum" in bad[0].detail
        assert not engine.run().failed
    job = next(j for j in ledger_jobs(pg_dsn) if j.chunk_name == target)
    assert job.state == JobState.DROPPED and job.attempts == 2
    archived = pq.read_table(lake / job.lake_paths[0]).to_pylist()
    assert len(archived) == len(rows)


def test_unsupported_type_fails_before_writing(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE geo (ts timestamptz NOT NULL, spot point, span int4range) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE geo_old PARTITION OF geo FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO geo VALUES ('2020-01-05', point(1,2), '[1,5)')")
    lake = tmp_path / "lake"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES="public.geo")
    result = subprocess.run([TSARCHIVE, "run"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "'spot' has type point" in result.stderr and "'span' has type int4range" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(lake.rglob("*.parquet"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM geo_old").fetchone()[0] == 1
    ok = subprocess.run([TSARCHIVE, "run"], env={**env, "ARCHIVER_UNSUPPORTED_AS_TEXT": "true"},
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    job = ledger_jobs(pg_dsn)[0]
    assert pq.read_table(lake / job.lake_paths[0]).to_pylist()[0]["spot"] == "(1,2)"


def test_arrays_a_list_cannot_hold_are_archived_as_exact_text_and_restored(pg_dsn, tmp_path):
    """Several dimensions, or a lower bound other than 1: the chunk archives (text beside the list) and restores exactly."""
    from shared_code.restore import restore

    values = ["'{{1,2},{3,4}}'", "'[0:1]={5,6}'", "'{7,NULL,8}'", "'{}'", "NULL", "'{{{1}},{{NULL}}}'",
              "'[-2:-1][3:4]={{1,2},{3,4}}'"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE grid (ts timestamptz NOT NULL, m int[], t text[]) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE grid_old PARTITION OF grid FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("CREATE TABLE grid_next PARTITION OF grid FOR VALUES FROM ('2020-02-01') TO ('2020-03-01')")
        for i, value in enumerate(values):
            conn.execute(f"INSERT INTO grid VALUES ('2020-01-05'::timestamptz + interval '{i} minutes', {value}, "
                         "'{{\"a b\",c},{d,NULL}}')")
        conn.execute("INSERT INTO grid VALUES ('2020-02-05', '{9,10}', '{x}')")  # plain lists: no text needed
        original = sorted(r[0] for r in conn.execute("SELECT (ts, m, t)::text FROM grid_old").fetchall())
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.grid"]) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        jobs = {j.chunk_name: j for j in engine.ledger.all_jobs()}
        rows = {r["ts"].isoformat(): r for r in pq.read_table(lake / jobs["grid_old"].lake_paths[0]).to_pylist()}
        first = rows["2020-01-05T00:00:00+00:00"]
        assert first["m"] is None and first["m__pg_text"] == "{{1,2},{3,4}}"
        plain = rows["2020-01-05T00:02:00+00:00"]
        assert plain["m"] == [7, None, 8] and plain["m__pg_text"] is None
        assert rows["2020-01-05T00:01:00+00:00"]["m__pg_text"] == "[0:1]={5,6}"
        assert "m__pg_text" not in pq.read_schema(lake / jobs["grid_next"].lake_paths[0]).names
        result = restore(engine, jobs["grid_old"].id)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        restored = sorted(r[0] for r in conn.execute(f"SELECT (ts, m, t)::text FROM {result.target}").fetchall())
    assert restored == original


def test_concurrent_claim_is_exclusive(pg_dsn, tmp_path, test_now):
    """While one worker holds a job, another skips it; once the holder's session ends, the job is free at once."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as first, \
         engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as second:
        jobs = first.record_plan(first.plan())
        job = jobs[0]
        assert first.ledger.try_claim(job.id)
        assert second.archive(job.id).outcome == "skipped"
        pid = first.conn.info.backend_pid
        first.conn.close()  # the holder dies
        wait_session_gone(pg_dsn, pid)
        assert second.archive(job.id).outcome == "done"


def test_change_detection_sees_every_column_whatever_the_names(pg_dsn, tmp_path):
    """Columns named like a row alias (`t`, `tsarchive_row`) must not hide changes to other columns."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE odd (ts timestamptz NOT NULL, t text, tsarchive_row int, v int) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE odd_old PARTITION OF odd FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO odd VALUES ('2020-01-02', 'same', 1, 1), ('2020-01-03', 'same', 2, 2)")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.odd"]) as engine:
        engine.run(drop=False)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE odd_old SET v = 42 WHERE tsarchive_row = 1")  # `t` and the row count stay the same
        assert not engine.run().failed
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.DROPPED and job.attempts == 2
    assert sorted(r["v"] for r in pq.read_table(lake / job.lake_paths[0]).to_pylist()) == [2, 42]


def test_drop_error_fails_that_job_only(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26, now=test_now)
        due = due_partitions(conn, PARENT, now=test_now)
        conn.execute(f"CREATE VIEW audit_view AS SELECT * FROM {due[0]}")  # DROP TABLE of that partition must fail
    with engine_for(pg_dsn, tmp_path / "lake", now=test_now, partitioned_tables=[PARENT]) as engine:
        report = engine.run()
    (failed,) = report.failed
    assert failed.step == "drop" and "audit_view" in failed.detail
    jobs = {j.chunk_name: j for j in ledger_jobs(pg_dsn)}
    assert jobs[due[0]].state == JobState.ARCHIVED and "drop:" in jobs[due[0]].last_error
    assert all(jobs[name].state == JobState.DROPPED for name in due[1:])


def test_archived_chunk_of_an_excluded_table_is_kept(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        due = due_partitions(conn, PARENT, now=test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as engine:
        engine.run(drop=False)
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[]) as engine:  # the table is no longer configured
        report = engine.run()
    assert {s.outcome for s in report.steps if s.step == "drop"} == {"skipped"}
    jobs = ledger_jobs(pg_dsn)
    assert all(j.state == JobState.ARCHIVED and "not in the current plan" in j.reason for j in jobs)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert all(conn.execute("SELECT to_regclass(%s)", (f"public.{n}",)).fetchone()[0] for n in due)


def test_a_job_whose_worker_keeps_dying_is_capped(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
    with engine_for(pg_dsn, tmp_path / "lake", now=test_now, partitioned_tables=[PARENT], max_attempts=3) as engine:
        job = engine.record_plan(engine.plan())[0]
        engine.ledger.transition(job.id, [JobState.PLANNED], JobState.ARCHIVING, attempts=3)  # three crashed workers
        assert job.id not in {j.id for j in engine.runnable_jobs()}
        capped = engine.ledger.get(job.id)
    assert capped.state == JobState.FAILED and "died during 3 attempts" in capped.last_error


def test_a_recreated_partition_never_hides_the_earlier_archive(pg_dsn, tmp_path, test_now):
    """A partition dropped after archiving, then recreated under the same name for late rows, gets its own files."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        target = due_partitions(conn, PARENT, now=test_now)[0]
        bounds = conn.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", (target,)).fetchone()[0]
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as engine:
        assert not engine.run().failed
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {target} PARTITION OF {PARENT} {bounds}")
            conn.execute(f"INSERT INTO {target} SELECT lower_ts, 7, 7.0, 'late' FROM (SELECT (regexp_match(%s, "
                         "'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lower_ts) s", (bounds,))
        assert not engine.run().failed
        verify = engine.verify()
    jobs = [j for j in ledger_jobs(pg_dsn) if j.chunk_name == target]
    assert len(jobs) == 2 and all(j.state == JobState.DROPPED for j in jobs)
    assert all(r.outcome == "done" for r in verify)  # the first job's files are intact
    files = [p for p in visible_files(lake) if f"-j{jobs[0].id}" in p.name or f"-j{jobs[1].id}" in p.name]
    assert len(files) == 2
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert rows == 50 + 1


def test_recovery_drill_decodes_everything_and_catches_rewritten_files(pg_dsn, tmp_path, test_now):
    """`verify --deep`: a file rewritten with other rows, its ledger checksum updated to match, passes the plain
    verify but not the drill, which recomputes the archive's content hash from the files."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26, now=test_now)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=test_now, partitioned_tables=[PARENT]) as engine:
        assert not engine.run().failed
        jobs = engine.ledger.all_jobs()
        assert all(r.outcome == "done" for r in engine.verify(deep=True))
        assert len([r for r in engine.verify(deep=True, sample=1) if r.job_id]) == 1
        victim = jobs[0]
        path = lake / victim.lake_paths[0]
        table = pq.read_table(path)
        changed = table.set_column(table.schema.get_field_index("note"), table.schema.field("note"),
                                   pa.array(["forged"] * table.num_rows))
        pq.write_table(changed, path, compression="zstd")
        import hashlib

        forged = hashlib.sha256(path.read_bytes()).hexdigest()
        engine.conn.execute("UPDATE archiver.jobs SET checksums = jsonb_build_object(lake_paths->>0, %s::text), "
                            "byte_count = %s WHERE id = %s", (forged, path.stat().st_size, victim.id))
        plain = {r.job_id: r for r in engine.verify()}
        drill = {r.job_id: r for r in engine.verify(deep=True)}
    assert plain[victim.id].outcome == "done"
    assert drill[victim.id].outcome == "failed" and "content hash differs" in drill[victim.id].detail
    assert all(r.outcome == "done" for job_id, r in drill.items() if job_id != victim.id)
