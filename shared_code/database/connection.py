"""Database connections: fixed session settings, connect with one clear error, the pooler probe, identifier quoting."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import psycopg
from psycopg import sql

from ..errors import ConfigError, DatabaseUnavailableError, render_error

# Fixed output formats, so row text (and so the content hash) does not depend on client settings.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_min_messages": "warning",
    # Reading a compressed chunk directly must see its compressed rows (a placeholder GUC without TimescaleDB).
    "timescaledb.enable_transparent_decompression": "on",
    # The ledger's compare-and-set and the drop's lock-then-check rely on a fresh snapshot per statement.
    "default_transaction_isolation": "read committed",
}


def session_setup_sql() -> str:
    return "; ".join(f"SET {name} = '{value}'" for name, value in SESSION_SETTINGS.items())


def redact(dsn: str) -> str:
    """Hide the password in a connection URL or key=value string."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn, flags=re.I)


def connect(dsn: str) -> psycopg.Connection:
    """Autocommit connection with fixed session settings; a clear error if unreachable."""
    try:
        # No server-side prepared statements: they collide on shared backends. Claims are session advisory locks,
        # so connect directly or through a session-mode pooler, never a transaction-mode one.
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10, prepare_threshold=None)
    except psycopg.OperationalError as error:
        # Transient as far as anyone can tell from here (down, failing over, a network blip): queued work is re-sent
        # with backoff; a wrong URL shows up as the same message on every attempt.
        raise DatabaseUnavailableError(
            f"cannot connect to the database at {redact(dsn)}: {render_error(error)}. Check ARCHIVER_DATABASE_URL."
        ) from None
    conn.execute(session_setup_sql())
    return conn


def relation(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def relation_sql(schema: str, name: str) -> str:
    """Quoted relation name as plain text, for ADBC."""
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def serializes_transactions(conn: psycopg.Connection) -> bool:
    """True for single-process builds (PGlite/WASM) where concurrent transactions block each other."""
    row = conn.execute("SELECT version()").fetchone()
    return bool(row and "emscripten" in str(row[0]).lower())


def refuse_transaction_pooling(conn: psycopg.Connection, dsn: Callable[[], str]) -> None:
    """Refuse a transaction-mode pooler (PgBouncer, Azure's built-in one on port 6432) with a clear message.

    Claims are session advisory locks: behind such a pooler a lock stays on whichever server session ran the
    statement, not with this client, so it guards nothing. Only probed when something sits between client and server
    (the server's port differs from the one dialled): a lock is taken here, and a second client tries to take it.
    """
    row = conn.execute("SELECT inet_server_port(), pg_backend_pid()").fetchone()
    if row is None or row[0] is None or str(row[0]) == str(conn.info.port):
        return
    key = int.from_bytes(os.urandom(4), "little") - 2**31
    conn.execute("SELECT pg_advisory_lock(0, %s)", (key,))
    with psycopg.connect(dsn(), autocommit=True, connect_timeout=10, prepare_threshold=None) as other:
        taken = other.execute("SELECT pg_try_advisory_lock(0, %s)", (key,)).fetchone()
        if taken and taken[0]:
            other.execute("SELECT pg_advisory_unlock(0, %s)", (key,))
    moved = conn.execute("SELECT pg_backend_pid()").fetchone()
    conn.execute("SELECT pg_advisory_unlock_all()")
    if (taken and taken[0]) or (moved and moved[0] != row[1]):
        raise ConfigError(
            f"ARCHIVER_DATABASE_URL reaches the server through a transaction-mode connection pooler (port "
            f"{conn.info.port}, server port {row[0]}): the session advisory locks that keep two workers off one chunk "
            f"would not hold. Connect to the server directly (port {row[0]}; on Azure Database for PostgreSQL 5432, "
            "not PgBouncer's 6432), or through a session-mode pooler.")


def ensure_schema(conn: psycopg.Connection, name: str) -> None:
    """Create a schema unless it exists: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it does,
    and a least-privilege role has its schemas created for it (docs/deploy.md)."""
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))


