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


def compressible_hypertable(conn: psycopg.Connection, table: str, chunk_interval: str) -> None:
    """`table` (ts, device, value) as a hypertable whose chunks compress segmented by device."""
    conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, device int, value float8)")
    conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '{chunk_interval}'))")
    conn.execute(f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = 'device')")


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


def range_differences(conn: psycopg.Connection, source: str, restored: str, low: str, high: str) -> tuple[int, int]:
    """Rows of `source` in [low, high) missing from `restored`, and rows of `restored` not in that range of `source`
    (EXCEPT ALL both ways, so duplicates count)."""
    window = "ts >= %s AND ts < %s"
    missing = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {source} WHERE {window} EXCEPT ALL "
                           f"SELECT * FROM {restored}) d", (low, high)).fetchone()[0]
    extra = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {restored} EXCEPT ALL "
                         f"SELECT * FROM {source} WHERE {window}) d", (low, high)).fetchone()[0]
    return missing, extra


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


class WormProxy:
    """An HTTP front for Azurite's Blob endpoint that enforces a container-level WORM policy on chosen containers, with
    the response Azure gives (409, error code BlobImmutableDueToPolicy): no blob there may be deleted, overwritten,
    renamed away (a copy's source delete) or have its properties or metadata set once it exists; creating a new blob,
    reading, listing and changing its tier stay allowed. Azurite has no immutability policies, so this is the storage
    boundary the archiver is tested against. Every refusal is counted, by operation."""

    _MUTATING = {None, "block", "blocklist", "metadata", "properties", "appendblock", "page", "snapshot"}

    def __init__(self, upstream_port: int, containers: set[str]) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, unquote, urlsplit

        from azure.storage.blob import BlobServiceClient

        from .conftest import AZURITE_CONNECTION_STRING

        proxy = self
        self._service = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING)
        self.containers = set(containers)
        self.refused: list[tuple[str, str]] = []  # (operation, blob path)
        self.forwarded = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                    upstream.request(method, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    return answer.status, answer.getheaders(), answer.read()
                finally:
                    upstream.close()

            def _exists(self, blob_path: str) -> bool:
                container, _, name = blob_path.partition("/")
                return proxy._service.get_blob_client(container, unquote(name)).exists()

            def _refuse(self, operation: str, blob_path: str) -> None:
                with proxy._lock:
                    proxy.refused.append((operation, blob_path))
                body = (b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobImmutableDueToPolicy</Code><Message>"
                        b"This operation is not permitted as the blob is immutable due to a policy.</Message></Error>"
                        )
                self.send_response(409, "This operation is not permitted as the blob is immutable due to a policy.")
                self.send_header("x-ms-error-code", "BlobImmutableDueToPolicy")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                parts = urlsplit(self.path)
                segments = parts.path.lstrip("/").split("/", 2)  # account, container, blob
                comp = (parse_qs(parts.query).get("comp") or [None])[0]
                protected = len(segments) == 3 and segments[1] in proxy.containers and segments[2]
                if protected:
                    blob_path = f"{segments[1]}/{segments[2]}"
                    if self.command == "DELETE":
                        return self._refuse("delete", blob_path)
                    if self.command == "PUT" and comp in proxy._MUTATING and self.headers.get("If-None-Match") != "*" \
                            and self._exists(blob_path):
                        return self._refuse(f"put {comp or 'blob'}", blob_path)
                status, headers, answer = self._forward(self.command, body)
                with proxy._lock:
                    proxy.forwarded += 1
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                upstream_length = next((v for k, v in headers if k.lower() == "content-length"), "0")
                self.send_header("Content-Length", upstream_length if self.command == "HEAD" else str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_PUT = do_DELETE = do_HEAD = do_POST = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def connection_string(self) -> str:
        from .conftest import AZURITE_KEY

        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
