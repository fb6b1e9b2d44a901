"""Faults, each followed by a rerun that converges with no row lost and none duplicated: storage going away
mid-upload, the database killing the extraction backend mid-chunk, the database restarting between archive and drop,
and a lake file deleted or truncated between archive and drop. Everything real: Azurite, PostgreSQL 15, pg_ctl."""

import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from shared_code import runtime
from shared_code.ledger import JobState
from shared_code.query import run_query
from shared_code.restore import restore_range

from .conftest import AZURITE_BLOB_PORT, AZURITE_CONNECTION_STRING, engine_for, settings_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # pinned; the data is from 2020, so every partition is due
PARENT = "public.events"


def _source(dsn: str, rows_per_month: int, months: int = 3, february: int | None = None) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (ts timestamptz NOT NULL, device int, note text) PARTITION BY RANGE (ts)")
        for month in range(1, months + 1):
            rows = february if month == 2 and february else rows_per_month
            conn.execute(f"CREATE TABLE events_2020_{month:02d} PARTITION OF events FOR VALUES FROM "
                         f"('2020-{month:02d}-01') TO ('2020-{month + 1:02d}-01')")
            conn.execute(f"INSERT INTO events SELECT '2020-{month:02d}-01'::timestamptz + i * interval '1 second', "
                         f"i % 97, md5(i::text) FROM generate_series(0, {rows - 1}) i")
        conn.execute("CREATE TABLE events_copy AS SELECT * FROM events")
        return conn.execute("SELECT count(*) FROM events_copy").fetchone()[0]


def _converged(dsn: str, engine, total: int, conn_string: str | None = None) -> None:
    """Every job dropped, the lake table holds each row once, and restoring it gives back exactly the source."""
    jobs = engine.ledger.all_jobs()
    assert jobs and all(j.state == JobState.DROPPED for j in jobs), [(j.chunk_name, j.state, j.last_error) for j in jobs]
    assert all(r.outcome == "done" for r in engine.verify())
    _, rows = run_query(engine.lake, "SELECT count(*), count(DISTINCT (ts, device, note)) FROM public.events", conn_string)
    assert rows == [(total, total)]
    result = restore_range(engine, PARENT, None, datetime(2021, 1, 1, tzinfo=UTC))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for a, b in ((result.target, "events_copy"), ("events_copy", result.target)):
            assert conn.execute(f"SELECT count(*) FROM (TABLE {a} EXCEPT ALL TABLE {b}) d").fetchone()[0] == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Outage:
    """A TCP proxy in front of the shared Azurite whose plug can be pulled: every open connection is cut and new
    ones are refused until it is put back, as when storage or the network to it goes away."""

    def __init__(self, target_port: int) -> None:
        self.target, self.port = target_port, _free_port()
        self.up = threading.Event()
        self.up.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()  # refused while the plug is out
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pull(self) -> None:
        self.up.clear()
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.pull()
        self.server.close()


@pytest.mark.scenario(
    'Storage cut off mid-upload (connections to Azurite dropped, refused for 2 s): reruns converge; '
    'every chunk dropped once, the lake holds each row once, a restore equals the source')
def test_storage_goes_away_mid_upload(pg_dsn, tmp_path, azurite_container):
    from azure.storage.blob import BlobServiceClient

    total = _source(pg_dsn, rows_per_month=200_000)
    outage = Outage(AZURITE_BLOB_PORT)
    conn_string = AZURITE_CONNECTION_STRING.replace(f":{AZURITE_BLOB_PORT}/", f":{outage.port}/")
    container = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).get_container_client(azurite_container)
    pulled = threading.Event()

    def pull_the_plug() -> None:  # as soon as the first Parquet bytes land: cut storage off, back 2 s later
        while not any(".parquet" in b.name for b in container.list_blobs()):
            time.sleep(0.01)
        outage.pull()
        pulled.set()
        time.sleep(2)
        outage.restore()

    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/archive"
    try:
        with engine_for(pg_dsn, lake_url, now=NOW, partitioned_tables=[PARENT], lake_connection_string=conn_string,
                        parallel_chunks=1) as engine:
            plug = threading.Thread(target=pull_the_plug, daemon=True)
            plug.start()
            engine.run()
            plug.join(timeout=60)
            assert pulled.is_set()  # the outage happened during the run
            for _ in range(3):  # the reruns a timer would make
                if not engine.run().failed and all(j.state == JobState.DROPPED for j in engine.ledger.all_jobs()):
                    break
            _converged(pg_dsn, engine, total, conn_string)
    finally:
        outage.close()


@pytest.mark.scenario(
    'pg_terminate_backend on the extraction backend mid-COPY: the job fails as transient (not '
    'terminal) and the rerun archives it; no row lost or duplicated')
def test_database_kills_the_extraction_backend_mid_chunk(pg_dsn, tmp_path):
    total = _source(pg_dsn, rows_per_month=20_000, february=2_000_000)  # February's COPY lasts long enough to catch
    killed = []

    def kill_the_copy() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            for _ in range(20_000):
                pids = [r[0] for r in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query ILIKE 'COPY%events_2020_02%'")]
                if pids:
                    for pid in pids:
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.extend(pids)
                    return
                time.sleep(0.003)

    with engine_for(pg_dsn, tmp_path / "lake", now=NOW, partitioned_tables=[PARENT], parallel_chunks=1) as engine:
        killer = threading.Thread(target=kill_the_copy, daemon=True)
        killer.start()
        first = engine.run()
        killer.join(timeout=60)
        assert killed
        failed = [s for s in first.failed if "events_2020_02" in s.chunk]
        assert failed and failed[0].step == "archive", first.failed
        job = next(j for j in engine.ledger.all_jobs() if j.chunk_name == "events_2020_02")
        assert job.state == JobState.FAILED and not job.terminal, job.last_error  # transient: retried, not given up
        assert not engine.run().failed
        _converged(pg_dsn, engine, total)


def _restart_postgres(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    pg_ctl = shutil.which("pg_ctl", path="/usr/lib/postgresql/15/bin:" + os.environ.get("PATH", ""))
    command = [pg_ctl, "-D", data, "-l", f"{data}/server.log", "-m", "fast", "-w", "restart"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    # no pipes: the new postmaster would hold them open, and waiting for their end would wait for the server
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", timeout=120)


@pytest.mark.scenario(
    "PostgreSQL restarted (pg_ctl) between archive and drop: the function app's pooled engine is "
    'replaced and the drops complete; no row lost or duplicated')
def test_database_restarts_between_archive_and_drop(pg_dsn, tmp_path):
    total = _source(pg_dsn, rows_per_month=5_000)
    settings = settings_for(pg_dsn, tmp_path / "lake", partitioned_tables=[PARENT])
    with runtime.engine(settings) as engine:  # the function app's pooled engine, as one instance keeps it
        engine.clock = lambda: NOW
        assert not engine.run(drop=False).failed
        assert {j.state for j in engine.ledger.all_jobs()} == {JobState.ARCHIVED}
    _restart_postgres(pg_dsn)
    with runtime.engine(settings) as engine:  # its connections died with the server: replaced, then the drops run
        engine.clock = lambda: NOW
        assert not engine.run().failed
        _converged(pg_dsn, engine, total)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
@pytest.mark.scenario(
    'A lake file deleted or truncated between archive and drop: the drop refuses, the chunk is '
    'archived again, then dropped; no row lost or duplicated')
def test_a_lake_file_damaged_between_archive_and_drop(pg_dsn, tmp_path, damage):
    total = _source(pg_dsn, rows_per_month=5_000)
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=NOW, partitioned_tables=[PARENT]) as engine:
        assert not engine.run(drop=False).failed
        job = engine.ledger.all_jobs()[0]
        path = lake / job.lake_paths[0]
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        engine.run()  # the drop re-checks the lake, refuses, and the chunk is archived again
        for _ in range(2):
            if all(j.state == JobState.DROPPED for j in engine.ledger.all_jobs()):
                break
            engine.run()
        again = engine.ledger.get(job.id)
        assert again.state == JobState.DROPPED and again.attempts == 2  # archived twice, dropped once
        _converged(pg_dsn, engine, total)


@pytest.mark.scenario(
    'A lock held on a due chunk (ACCESS EXCLUSIVE, by DDL) during the archive: a bounded wait, the job fails as '
    'transient and the rest go on; once released, the rerun converges')
def test_a_locked_chunk_fails_its_attempt_instead_of_hanging(pg_dsn, tmp_path):
    total = _source(pg_dsn, rows_per_month=5_000)
    holder = psycopg.connect(pg_dsn)
    holder.execute("LOCK TABLE events_2020_02 IN ACCESS EXCLUSIVE MODE")
    with engine_for(pg_dsn, tmp_path / "lake", now=NOW, partitioned_tables=[PARENT], lock_timeout_ms=300) as engine:
        first = engine.run()
        failed = {s.chunk for s in first.failed}
        assert failed == {"public.events_2020_02"}, first.failed
        job = next(j for j in engine.ledger.all_jobs() if j.chunk_name == "events_2020_02")
        assert job.state == JobState.FAILED and not job.terminal and "lock" in job.last_error
        assert {j.state for j in engine.ledger.all_jobs() if j.id != job.id} == {JobState.DROPPED}
        holder.rollback()
        holder.close()
        assert not engine.run().failed
        _converged(pg_dsn, engine, total)
