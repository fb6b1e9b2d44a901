"""Process-wide wiring for the function app: settings, engine and transport from app settings."""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.pq import ExecStatus, TransactionStatus
from pydantic import SecretStr

from . import telemetry
from .engine import Engine
from .settings import Settings, load_settings
from .transport import Transport, make_transport

log = logging.getLogger("tsarchive")
_transport: Transport | None = None
_transport_key: tuple | None = None
# Idle engines kept between invocations of this function instance: (returned at, settings key, engine).
_idle: list[tuple[float, str, Engine]] = []
_idle_lock = threading.Lock()
# Kept engines are closed after this long unused: under the ~4 minutes after which Azure drops an idle TCP flow
# (the keepalives in dbauth.TCP_KEEPALIVES keep the flow alive meanwhile).
IDLE_SECONDS = 180
# How long the liveness check of a kept engine may wait for `SELECT 1`: a flow dropped behind the app's back never
# answers, and without a bound the check would hang until the kernel gives up.
PROBE_SECONDS = 5.0


def settings() -> Settings:
    return load_settings()


def _settings_key(current: Settings) -> str:
    reveal = lambda v: v.get_secret_value() if isinstance(v, SecretStr) else str(v)  # noqa: E731 - memory only
    return json.dumps(current.model_dump(), default=reveal, sort_keys=True)


def _answers(conn: psycopg.Connection, timeout: float) -> bool:
    """`SELECT 1` answered within `timeout` seconds, waited for on the socket (libpq's own calls would block)."""
    pgconn = conn.pgconn
    pgconn.send_query(b"SELECT 1")
    deadline = time.monotonic() + timeout
    while pgconn.flush():  # psycopg keeps libpq non-blocking: the query may still sit in libpq's buffer
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([], [pgconn.socket], [], remaining)[1]:
            return False
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return True
            if result.status != ExecStatus.TUPLES_OK:
                return False
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([pgconn.socket], [], [], remaining)[0]:
            return False


def _usable(candidate: Engine) -> bool:
    """An idle engine's session is still open, outside any transaction, and answers within PROBE_SECONDS."""
    conn = candidate.conn
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        return _answers(conn, PROBE_SECONDS)
    except Exception:  # noqa: BLE001 - a dropped connection of any kind: discard it
        return False


@contextmanager
def engine(current: Settings | None = None) -> Iterator[Engine]:
    """An engine for one invocation, kept for the next ones of this instance: its connections (and ADBC's type
    catalog read, a second per connect in a database of 10,000 chunks) are paid once per instance, not per chunk."""
    telemetry.configure()
    current = current or settings()
    key, now = _settings_key(current), time.monotonic()
    leased, stale = None, []
    with _idle_lock:
        for entry in list(_idle):
            if now - entry[0] > IDLE_SECONDS:
                _idle.remove(entry)
                stale.append(entry[2])
            elif leased is None and entry[1] == key:
                _idle.remove(entry)
                leased = entry[2]
    for old in stale:
        old.close()
    if leased is not None and not _usable(leased):
        leased.close()
        leased = None
    worker = leased or Engine(current)
    healthy = False
    try:
        yield worker
        healthy = True
    finally:
        if healthy and _usable(worker):
            with _idle_lock:
                _idle.append((time.monotonic(), key, worker))
        else:
            worker.close()


def close_idle() -> None:
    """Close every kept engine (tests, shutdown)."""
    with _idle_lock:
        engines = [entry[2] for entry in _idle]
        _idle.clear()
    for old in engines:
        old.close()


def transport(current: Settings | None = None) -> Transport:
    """One transport per process (its SDK clients hold connections); rebuilt if the settings change."""
    global _transport, _transport_key
    current = current or settings()
    key = (current.transport, current.requests_queue, current.confirmations_queue, current.poison_queue,
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("ServiceBusConnection", "ArchiverQueueStorage")))))
    if _transport is None or key != _transport_key:
        _transport, _transport_key = make_transport(current), key
    return _transport
