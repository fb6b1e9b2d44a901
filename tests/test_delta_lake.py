"""The archive as a Delta Lake table: readers, partition truth, replacing commits, concurrency, crashes, evolution.

Real PostgreSQL 15 and TimescaleDB; every clock is injected, so nothing depends on today's date.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shared_code.engine import Engine
from shared_code.ledger import JobState

from .conftest import TSARCHIVE, cli_env, settings_for
from .helpers import ledger_jobs, normalise, visible_files

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # cutoff (730 days) = 2024-03-15 12:00 UTC
DELTA_EXT = None


def duck() -> duckdb.DuckDBPyConnection:
    from shared_code.query import _extension

    conn = duckdb.connect()
    conn.execute(f"LOAD '{_extension('duckdb_extension_delta')}'")
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def rows_key(rows) -> list[tuple]:
    return sorted((tuple(normalise(v) for v in r) for r in rows), key=repr)


def delta_rows(path: Path, partition_columns=("year", "month")) -> list[tuple]:
    table = DeltaTable(str(path)).to_pyarrow_table()
    return rows_key(tuple(r.values()) for r in table.drop_columns(list(partition_columns)).to_pylist())


def duckdb_delta_rows(path: Path, columns: str) -> list[tuple]:
    return rows_key(duck().execute(f"SELECT {columns} FROM delta_scan('{path}')").fetchall())


def plain_parquet_rows(path: Path, columns: str) -> list[tuple]:
    """What a Hive-style reader sees scanning the visible files (Synapse OPENROWSET wildcard, Spark on files)."""
    files = [str(p) for p in visible_files(path) if p.suffix == ".parquet"]
    if not files:
        return []
    listed = ", ".join(f"'{f}'" for f in files)
    return rows_key(duck().execute(
        f"SELECT {columns} FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = true)").fetchall())


def active_by_version(path: Path) -> dict[int, list[str]]:
    table = DeltaTable(str(path))
    out = {}
    for version in range(table.version() + 1):
        snapshot = DeltaTable(str(path), version=version)
        out[version] = pa.table(snapshot.get_add_actions(flatten=True)).column("path").to_pylist()
    return out


def attempt_of(path: str) -> tuple[int, str]:
    match = re.search(r"-j(\d+)-([0-9a-f]{8})-p\d{3}\.parquet$", path)
    assert match, path
    return int(match.group(1)), match.group(2)


def make_months(conn: psycopg.Connection, first: datetime, months: int, per_month: int = 40,
                table: str = "public.events") -> None:
    """A RANGE-partitioned table, one partition per month from `first`, rows spread through each month."""
    conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, device int NOT NULL, value float8, note text) "
                 "PARTITION BY RANGE (ts)")
    lo = first
    for _ in range(months):
        hi = (lo + timedelta(days=32)).replace(day=1)
        part = f'{table[:-1]}_{lo:%Y_%m}"' if table.endswith('"') else f"{table}_{lo:%Y_%m}"
        conn.execute(f"CREATE TABLE {part} PARTITION OF {table} FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')")
        conn.execute(f"INSERT INTO {table} SELECT %s::timestamptz + g * ((%s::timestamptz - %s::timestamptz) / %s), "
                     "g %% 3, g * 0.5, 'n' || g FROM generate_series(0, %s - 1) g", (lo, hi, lo, per_month, per_month))
        lo = hi


# -- TimescaleDB: every reader, partition truth ---------------------------------------------------------------------
def test_hypertable_archive_is_a_true_delta_table(timescale, tmp_path):
    table = "Odd Metrics"
    qualified = f'{timescale.schema}."{table}"'
    with timescale.connect() as conn:
        conn.execute(f"CREATE TABLE {qualified} (ts timestamptz NOT NULL, device int NOT NULL, value float8, note text)")
        conn.execute(f"SELECT create_hypertable('{qualified}', by_range('ts', INTERVAL '10 days'))")
        conn.execute(f"SELECT add_dimension('{qualified}', by_hash('device', 2))")
        conn.execute(f"INSERT INTO {qualified} SELECT t, d, d + extract(epoch FROM t) / 1e9, 'n' || d "
                     "FROM generate_series('2023-11-20 00:00+00'::timestamptz, '2024-02-10 00:00+00', '7 hours') t, "
                     "generate_series(1, 3) d")
        conn.execute(f"INSERT INTO {qualified} SELECT t, 1, 1, 'hot' FROM generate_series(%s::timestamptz - "
                     "INTERVAL '20 days', %s::timestamptz, '1 day') t", (NOW, NOW))
        conn.execute(f"ALTER TABLE {qualified} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')")
        oldest = conn.execute("SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                              "WHERE hypertable_schema = %s ORDER BY range_start LIMIT 1", (timescale.schema,)).fetchone()[0]
        conn.execute("SELECT compress_chunk(%s::regclass)", (oldest,))
        due = conn.execute("SELECT chunk_name, range_start, range_end FROM timescaledb_information.chunks "
                           "WHERE hypertable_schema = %s AND range_end <= %s", (timescale.schema, NOW - timedelta(days=730))
                           ).fetchall()
        expected = rows_key(r for name, _, _ in due for r in conn.execute(f"SELECT * FROM _timescaledb_internal.{name}"))
    ranges = [(lo.astimezone(UTC), (hi - timedelta(microseconds=1)).astimezone(UTC)) for _, lo, hi in due]
    assert any(lo.month != hi.month for lo, hi in ranges), "fixture must have a chunk crossing a month boundary"
    assert any(lo.year != hi.year for lo, hi in ranges), "fixture must have a chunk crossing a year boundary"

    lake = tmp_path / "lake"
    settings = settings_for(timescale.dsn, lake, include=[f"{timescale.schema}.*"], ledger_schema=timescale.ledger)
    with Engine(settings, clock=lambda: NOW) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        assert all(r.outcome == "done" for r in engine.verify())
        jobs = engine.ledger.all_jobs()
    assert {j.chunk_name for j in jobs} == {name for name, _, _ in due}
    assert all(j.state == JobState.DROPPED for j in jobs)

    path = lake / f"{timescale.schema}.Odd~20Metrics"
    columns = "ts, device, value, note"
    assert delta_rows(path) == expected
    assert duckdb_delta_rows(path, columns) == expected
    assert plain_parquet_rows(path, columns) == expected

    # Partition truth: every visible file's rows lie in its folder's UTC year and month.
    files = [p for p in visible_files(path) if p.suffix == ".parquet"]
    assert len(files) > len(due)  # chunks crossing a month were split
    for file in files:
        year, month = (int(x) for x in re.search(r"year=(\d{4})/month=(\d{1,2})/", str(file)).groups())
        ts = pq.read_table(file, columns=["ts"]).column("ts")
        lo, hi = (v.as_py().astimezone(UTC) for v in (pa.compute.min(ts), pa.compute.max(ts)))
        assert (lo.year, lo.month) == (hi.year, hi.month) == (year, month), file

    # Minimal protocol, one commit per chunk carrying its identity, statistics that prune correctly.
    delta = DeltaTable(str(path))
    protocol = delta.protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert not protocol.reader_features and not protocol.writer_features
    commits = [h for h in delta.history() if "tsarchive" in h]
    assert sorted(h["tsarchive"]["job_id"] for h in commits) == sorted(j.id for j in jobs)
    by_job = {j.id: j for j in jobs}
    for commit in commits:
        meta = commit["tsarchive"]
        job = by_job[meta["job_id"]]
        assert meta["source_chunk"] == f"_timescaledb_internal.{job.chunk_name}"
        assert meta["content_hash"] == job.content_hash and meta["rows"] == job.row_count
        assert int(commit["version"]) == job.delta_version
    lo, hi = datetime(2023, 12, 30, tzinfo=UTC), datetime(2024, 1, 2, 5, tzinfo=UTC)
    want = sum(1 for r in expected if lo <= r[0] < hi)
    got = duck().execute(f"SELECT count(*) FROM delta_scan('{path}') WHERE ts >= $1 AND ts < $2", [lo, hi]).fetchone()[0]
    assert got == want > 0


# -- PostgreSQL 15: replacing commit, concurrency, crash, evolution, checkpoints ------------------------------------
def test_late_change_is_one_replacing_commit_and_every_version_holds_each_row_once(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 4)
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"])
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run(drop=False).failed
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.events VALUES ('2023-02-14 10:00+00', 9, 9.5, 'late')")
            expected = rows_key(conn.execute("SELECT * FROM public.events WHERE ts < '2023-05-01'"))
        report = engine.run()
        assert not report.failed, report.failed
    path = lake / "public.events"
    versions = active_by_version(path)
    assert len(versions) == 5  # four first commits, one replacing commit
    replacing = DeltaTable(str(path)).history(limit=1)[0]["tsarchive"]
    assert len(replacing["replaces"]) == 1 and len(replacing["files"]) == 1
    assert attempt_of(replacing["replaces"][0])[0] == attempt_of(replacing["files"][0]["path"])[0]
    for version, paths in versions.items():
        attempts = {}
        for p in paths:
            job, token = attempt_of(p)
            attempts.setdefault(job, set()).add(token)
        assert all(len(tokens) == 1 for tokens in attempts.values()), (version, paths)
        assert len(attempts) == min(version + 1, 4)
    assert delta_rows(path) == expected
    assert plain_parquet_rows(path, "ts, device, value, note") == expected
    assert not (lake / "public.events" / replacing["replaces"][0]).exists()


def test_two_archiver_processes_commit_to_one_table(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2022, 1, 1, tzinfo=UTC), 20, per_month=30)
        expected = rows_key(conn.execute("SELECT * FROM public.events"))
    lake = tmp_path / "lake"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_RETENTION_DAYS="30")
    subprocess.run([TSARCHIVE, "init"], env=env, check=True, capture_output=True)
    procs = [subprocess.Popen([TSARCHIVE, "run", "--no-drop", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = [s for out, _ in outputs for s in json.loads(out)["steps"] if s["outcome"] == "done"]
    assert len(done) == 20
    jobs = ledger_jobs(pg_dsn)
    assert len(jobs) == 20 and all(j.state == JobState.ARCHIVED for j in jobs)
    path = lake / "public.events"
    table = DeltaTable(str(path))
    assert table.version() == 19  # twenty commits, none lost
    live = set(pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist())
    assert live == {p.removeprefix("public.events/") for j in jobs for p in j.lake_paths}
    assert delta_rows(path) == expected


def test_crash_between_upload_and_commit_leaves_no_visible_stray(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 3)
        expected = rows_key(conn.execute("SELECT * FROM public.events"))
    lake = tmp_path / "lake"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_RETENTION_DAYS="30")
    crashed = subprocess.run([TSARCHIVE, "run"], env={**env, "TSARCHIVE_CRASH_AT": "before_commit"},
                             capture_output=True, text=True)
    assert crashed.returncode == 137, crashed.stderr
    path = lake / "public.events"
    stray = [p for p in visible_files(path) if p.suffix == ".parquet"]
    assert len(stray) == 1 and not (path / "_delta_log").exists()  # visible, never committed
    rerun = subprocess.run([TSARCHIVE, "run"], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not stray[0].exists()
    assert delta_rows(path) == expected
    assert plain_parquet_rows(path, "ts, device, value, note") == expected
    assert not [p for p in (path / "_tsarchive" / "staging").rglob("*") if p.is_file()]


def test_schema_evolution(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 6, per_month=10)
    lake = tmp_path / "lake"
    clock = {"now": datetime(2025, 3, 1, tzinfo=UTC)}  # cutoff 2023-03-02: January and February are due
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"])
    path = lake / "public.events"

    def run(**overrides) -> list:
        with Engine(settings.model_copy(update=overrides), clock=lambda: clock["now"]) as engine:
            return engine.run().failed

    assert not run()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a column added after two months were archived
        conn.execute("ALTER TABLE public.events ADD COLUMN site text")
        conn.execute("UPDATE public.events SET site = 'north' WHERE ts >= '2023-03-01'")
    clock["now"] = datetime(2025, 4, 2, tzinfo=UTC)  # March is due
    assert not run()
    table = DeltaTable(str(path))
    assert [f.name for f in table.schema().fields] == ["ts", "device", "value", "note", "year", "month", "site"]
    sites = duck().execute(f"SELECT month, count(*), count(site) FROM delta_scan('{path}') GROUP BY 1 ORDER BY 1").fetchall()
    assert sites == [(1, 10, 0), (2, 10, 0), (3, 10, 10)]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a column dropped
        conn.execute("ALTER TABLE public.events DROP COLUMN note")
    clock["now"] = datetime(2025, 5, 2, tzinfo=UTC)  # April is due
    assert not run()
    notes = duck().execute(f"SELECT month, count(note) FROM delta_scan('{path}') GROUP BY 1 ORDER BY 1").fetchall()
    assert notes == [(1, 10), (2, 10), (3, 10), (4, 0)]
    assert "note" in [f.name for f in DeltaTable(str(path)).schema().fields]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a type Delta cannot widen at reader 1 / writer 2
        conn.execute("ALTER TABLE public.events ALTER COLUMN device TYPE bigint")
    clock["now"] = datetime(2025, 6, 2, tzinfo=UTC)  # May is due
    before = DeltaTable(str(path)).version()
    failed = run()
    assert len(failed) == 1
    message = failed[0].detail
    assert "'device'" in message and "public.events" in message and "ARCHIVER_LAKE_TABLE_NAMES" in message
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM public.events_2023_05").fetchone()[0] == 10  # nothing dropped
    assert DeltaTable(str(path)).version() == before  # and nothing committed
    (stuck,) = [j for j in ledger_jobs(pg_dsn) if j.state == JobState.FAILED]
    assert stuck.terminal and stuck.attempts == 1  # no retry can help until someone acts: no retries spent
    assert "`tsarchive run`" in message
    with Engine(settings, clock=lambda: clock["now"]) as engine:
        assert not engine.ledger.enqueueable(0, 5)  # the timer sends it no more; an operator's run or retry does
    assert not run(lake_table_names={"public.events": "public.events_v2"})
    moved = duck().execute(f"SELECT count(*), min(month) FROM delta_scan('{lake / 'public.events_v2'}')").fetchone()
    assert moved == (10, 5)


def test_checkpoints_keep_the_log_short(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 5, per_month=5)
        expected = rows_key(conn.execute("SELECT * FROM public.events"))
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"], delta_checkpoint_interval=2)
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run().failed
    log_dir = lake / "public.events" / "_delta_log"
    checkpoints = sorted(p.name for p in log_dir.glob("*.checkpoint.parquet"))
    # delta-rs checkpoints after every second commit (versions 1 and 3 of 0..4): classic single-file checkpoints
    assert checkpoints == ["00000000000000000001.checkpoint.parquet", "00000000000000000003.checkpoint.parquet"]
    assert json.loads((log_dir / "_last_checkpoint").read_text())["version"] == 3
    assert not list(log_dir.glob("*.checkpoint.*.parquet")) and not (log_dir / "_sidecars").exists()
    assert duckdb_delta_rows(lake / "public.events", "ts, device, value, note") == expected


def test_query_command(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 2, per_month=6)
    lake = tmp_path / "lake"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_RETENTION_DAYS="30")
    assert subprocess.run([TSARCHIVE, "run"], env=env, capture_output=True, text=True).returncode == 0
    query_env = {k: v for k, v in env.items() if k != "ARCHIVER_DATABASE_URL"}  # the archive needs no database
    csv_out = subprocess.run([TSARCHIVE, "query", "SELECT month, count(*) AS n FROM public.events GROUP BY 1 ORDER BY 1",
                              "--csv"], env=query_env, capture_output=True, text=True)
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout.splitlines() == ["month,n", "1,6", "2,6"]
    as_json = subprocess.run([TSARCHIVE, "query", "SELECT max(ts) AS last FROM events", "--json"], env=query_env,
                             capture_output=True, text=True)
    assert json.loads(as_json.stdout)[0]["last"].startswith("2023-02-2")
    bad = subprocess.run([TSARCHIVE, "query", "SELEC nonsense"], env=query_env, capture_output=True, text=True)
    assert bad.returncode == 1 and "query failed" in bad.stderr and "public.events" in bad.stderr
    empty = subprocess.run([TSARCHIVE, "query", "SELECT 1"], env={**query_env, "ARCHIVER_LAKE_URL": (tmp_path / "none").as_uri()},
                           capture_output=True, text=True)
    assert empty.returncode == 0 and "1" in empty.stdout


def test_verify_reports_visible_files_no_commit_holds(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 2, per_month=5)
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"])
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run(drop=False).failed
        assert all(r.outcome == "done" for r in engine.verify())
        committed = next(p for p in visible_files(lake) if p.suffix == ".parquet")
        fresh = committed.with_name(committed.name.replace("-p000", "-p001"))
        fresh.write_bytes(committed.read_bytes())  # as an archive in flight would, between its move and its commit
        assert all(r.outcome == "done" for r in engine.verify())  # too young to call it stray
        hours_ago = datetime.now(UTC).timestamp() - 7200
        os.utime(fresh, (hours_ago, hours_ago))
        strays = [r for r in engine.verify() if r.outcome == "failed"]
    assert len(strays) == 1 and strays[0].chunk == "public.events" and fresh.name in strays[0].detail
    assert len(plain_parquet_rows(lake / "public.events", "ts")) == 15  # the stray's rows would be seen twice


def test_a_chunk_archived_in_the_layout_before_delta_is_moved_into_the_table_before_its_drop(pg_dsn, tmp_path):
    import hashlib
    import shutil

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 1, per_month=8)
        expected = rows_key(conn.execute("SELECT * FROM public.events"))
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"])
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run(drop=False).failed
    # Turn that archive into what the earlier release wrote: one Hive file, a manifest beside it, no Delta table.
    (job,) = ledger_jobs(pg_dsn)
    legacy = "public.events/year=2023/month=01/20230101T000000Z_20230201T000000Z-events_2023_01-j1.parquet"
    legacy_manifest = "public.events/year=2023/month=01/_20230101T000000Z_20230201T000000Z-events_2023_01-j1.manifest.json"
    (lake / legacy).parent.mkdir(parents=True)
    shutil.copy(lake / job.lake_paths[0], lake / legacy)
    shutil.copy(lake / job.manifest_path, lake / legacy_manifest)
    shutil.rmtree(lake / "public.events" / "_delta_log")
    shutil.rmtree(lake / "public.events" / "year=2023" / "month=1")
    digest = hashlib.sha256((lake / legacy).read_bytes()).hexdigest()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE archiver.jobs SET table_path = NULL, delta_version = NULL, lake_paths = %s, checksums = %s, "
                     "manifest_path = %s", (json.dumps([legacy]), json.dumps({legacy: digest}), legacy_manifest))

    with Engine(settings, clock=lambda: NOW) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        assert all(r.outcome == "done" for r in engine.verify())
    (job,) = ledger_jobs(pg_dsn)
    assert job.state == JobState.DROPPED and job.table_path == "public.events" and job.delta_version == 0
    assert not (lake / legacy).exists() and not (lake / legacy_manifest).exists()
    assert delta_rows(lake / "public.events") == expected
    assert plain_parquet_rows(lake / "public.events", "ts, device, value, note") == expected


@pytest.mark.parametrize("key_type", ["date", "timestamp", "timestamptz"])
def test_partition_truth_for_every_time_type(pg_dsn, tmp_path, key_type):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")  # session time zones must not move rows between months
        conn.execute(f"CREATE TABLE public.days (day {key_type} NOT NULL, v int) PARTITION BY RANGE (day)")
        conn.execute("CREATE TABLE public.days_p PARTITION OF public.days FOR VALUES FROM ('2023-12-15') TO ('2024-01-15')")
        conn.execute("INSERT INTO public.days SELECT g, 1 FROM generate_series('2023-12-15'::timestamp, "
                     "'2024-01-14 23:00', '1 hour') g")
        months = dict(conn.execute("SELECT CASE WHEN %s = 'timestamptz' THEN to_char(day AT TIME ZONE 'UTC', 'YYYY-MM') "
                                   "ELSE to_char(day, 'YYYY-MM') END, count(*) FROM public.days GROUP BY 1",
                                   (key_type,)).fetchall())
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.days"])
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run().failed
    folders = {}
    for file in (p for p in visible_files(lake) if p.suffix == ".parquet"):
        year, month = (int(x) for x in re.search(r"year=(\d{4})/month=(\d{1,2})/", str(file)).groups())
        values = pq.read_table(file).column("day")
        stamps = [v.as_py() for v in (pa.compute.min(values), pa.compute.max(values))]
        stamps = [s.astimezone(UTC) if isinstance(s, datetime) else s for s in stamps]
        assert {(s.year, s.month) for s in stamps} == {(year, month)}, file
        folders[f"{year}-{month:02d}"] = folders.get(f"{year}-{month:02d}", 0) + pq.read_metadata(file).num_rows
    assert folders == months and len(months) >= 2


def test_compact_encodings_are_delta_binary_packed_only(pg_dsn, tmp_path):
    """ARCHIVER_PARQUET_ENCODINGS=compact: DELTA_BINARY_PACKED timestamps and bigints, floats PLAIN (Spark's default
    reader refuses BYTE_STREAM_SPLIT); the rows read back the same."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_months(conn, datetime(2023, 1, 1, tzinfo=UTC), 1, per_month=500)
        conn.execute("ALTER TABLE public.events ADD COLUMN big int8 DEFAULT 7")
        expected = rows_key(conn.execute("SELECT ts, device, value, note FROM public.events"))
    lake = tmp_path / "lake"
    settings = settings_for(pg_dsn, lake, partitioned_tables=["public.events"], parquet_encodings="compact")
    with Engine(settings, clock=lambda: NOW) as engine:
        assert not engine.run().failed
    (path,) = [p for p in visible_files(lake / "public.events") if p.suffix == ".parquet"]
    meta = pq.ParquetFile(path).metadata
    encodings = {meta.row_group(0).column(i).path_in_schema: set(meta.row_group(0).column(i).encodings)
                 for i in range(meta.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["ts"] and "DELTA_BINARY_PACKED" in encodings["big"]
    assert not any("BYTE_STREAM_SPLIT" in e for e in encodings.values())
    assert duckdb_delta_rows(lake / "public.events", "ts, device, value, note") == expected
