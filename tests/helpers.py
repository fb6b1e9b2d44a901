"""Shared test helpers: build source tables, read archives back."""

from __future__ import annotations

import json
import math
import select
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq

from shared_code.ledger import Ledger


def month_start(value: datetime) -> datetime:
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(value: datetime, months: int) -> datetime:
    index = value.year * 12 + value.month - 1 + months
    return value.replace(year=index // 12, month=index % 12 + 1)


def make_monthly_partitions(conn: psycopg.Connection, table: str = "public.events", months_back: int = 28,
                            rows_per_month: int = 50, extra_columns: str = "", default_rows: int = 3,
                            now: datetime | None = None) -> list[str]:
    """A RANGE-partitioned table with one partition per month back to `months_back` before `now`, plus a default one.

    `now` defaults to the real time: right for tests whose archiver (CLI, function app) reads the real clock; tests
    that inject a clock pass the same instant here, to `due_partitions` and to `engine_for(now=...)`.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    conn.execute(f"""CREATE TABLE {table} (ts timestamptz NOT NULL, device int NOT NULL, value float8, note text
                     {extra_columns}) PARTITION BY RANGE (ts)""")
    names = []
    base = month_start(now)
    for offset in range(months_back, -2, -1):
        lo, hi = add_months(base, -offset), add_months(base, -offset + 1)
        name = f"{table}_{lo:%Y_%m}"
        conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')")
        names.append(name)
        step = (hi - lo) / rows_per_month
        conn.execute(
            f"INSERT INTO {table} (ts, device, value, note) SELECT %s::timestamptz + g * %s::interval, g %% 5, g * 1.5, 'n' || g "
            "FROM generate_series(0, %s - 1) g",
            (lo, step, rows_per_month),
        )
    conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    conn.execute(f"INSERT INTO {table} (ts, device, value, note) SELECT %s::timestamptz + interval '10 years', g, g, "
                 "'future' FROM generate_series(1, %s) g", (now, default_rows))
    return names


def due_partitions(conn: psycopg.Connection, parent: str, days: int = 730, now: datetime | None = None) -> list[str]:
    """Leaf partitions whose upper bound is at or before now - days, computed independently of the archiver.

    `now` defaults to the real time; pass the instant the data and the engine's clock were given.
    """
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass
        """,
        (parent,),
    ).fetchall()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    due = []
    for name, bound in rows:
        if "TO (" not in bound:
            continue
        upper = bound.split("TO ('", 1)[1].split("')", 1)[0]
        if datetime.fromisoformat(upper.replace(" ", "T")) <= cutoff:
            due.append(name)
    return sorted(due)


def rows_of(conn: psycopg.Connection, relation: str, order: str = "1, 2") -> list[tuple]:
    return [tuple(r) for r in conn.execute(f"SELECT * FROM {relation} ORDER BY {order}").fetchall()]


def parquet_rows(lake_root: Path, paths: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        out.extend(pq.read_table(lake_root / path).to_pylist())
    return out


def normalise(value: Any) -> Any:
    """Make PostgreSQL and Parquet values comparable (JSON text vs dict, NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def visible_files(lake_root: Path) -> list[Path]:
    """Files a Hive/Spark reader would see: no path component starting with `_` or `.`."""
    return [p for p in lake_root.rglob("*") if p.is_file()
            and not any(part.startswith(("_", ".")) for part in p.relative_to(lake_root).parts)]


def ledger_jobs(dsn: str, schema: str = "archiver"):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return Ledger(conn, schema).all_jobs()


def wait_session_gone(dsn: str, pid: int, timeout: float = 10.0) -> None:
    """A closed client's backend exits asynchronously; wait until the server has ended it."""

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {pid} still alive after {timeout}s")
            time.sleep(0.02)


class CountingListener:
    """A TCP port that accepts and counts connections, then closes them: proof that nothing connected."""

    def __init__(self) -> None:
        import threading

        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def __enter__(self) -> CountingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


class TcpProxy:
    """A TCP forwarder to a real server that a test can take down (connections refused, open ones cut) or whose open
    flows it can freeze (kept open, nothing forwarded: what a load balancer that silently dropped an idle flow looks
    like) while new connections go through."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._flows: list = []  # one frozen flag per open connection
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: list = []
        self._server = None
        self.start()

    def start(self) -> None:
        import threading

        self._server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._running = threading.Event()
        self._running.set()
        threading.Thread(target=self._accept, args=(self._server, self._running), daemon=True).start()

    def _accept(self, server, running) -> None:
        import threading

        while running.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            frozen = threading.Event()
            with self._lock:
                self.accepted += 1
                self._sockets += [client, upstream]
                self._flows.append(frozen)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target, frozen), daemon=True).start()

    def freeze_open_flows(self) -> None:
        with self._lock:
            for frozen in self._flows:
                frozen.set()
        time.sleep(0.3)  # a pump already past its check forwards what it holds, then stops

    def _pump(self, source, target, frozen) -> None:

        try:
            while True:
                if frozen.is_set():
                    time.sleep(0.05)  # hold the bytes: neither forwarded nor refused
                    continue
                if not select.select([source], [], [], 0.1)[0] or frozen.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):  # ValueError: the socket was closed by stop()
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.close()
                except OSError:
                    pass

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a database going down does."""
        self._running.clear()
        self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:

                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop()
