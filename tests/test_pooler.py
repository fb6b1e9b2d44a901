"""A transaction-mode pooler (PgBouncer, as Azure's built-in one on port 6432 runs) is refused with a clear message:
behind it the session advisory locks that guard claims would guard nothing. `make services` starts one in front of
PostgreSQL 15 on TSARCHIVE_POOLER_PORT (55435) when pgbouncer is installed."""

import os
import socket
import subprocess

import psycopg
import pytest

from shared_code.errors import ConfigError

from .conftest import TSARCHIVE, cli_env, engine_for

POOLER_PORT = int(os.environ.get("TSARCHIVE_POOLER_PORT", "55435"))


@pytest.fixture
def pooled_dsn(pg_dsn):
    try:
        socket.create_connection(("127.0.0.1", POOLER_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"PgBouncer is not running on {POOLER_PORT}: install pgbouncer, then `make services`")
    return pg_dsn.replace(pg_dsn.rsplit("@", 1)[1].split("/")[0], f"127.0.0.1:{POOLER_PORT}")


def test_the_pooler_really_is_transaction_mode(pooled_dsn):
    """The premise: through it, a second client can take a session lock the first one holds."""
    with psycopg.connect(pooled_dsn, autocommit=True, prepare_threshold=None) as first, \
            psycopg.connect(pooled_dsn, autocommit=True, prepare_threshold=None) as second:
        first.execute("SELECT pg_advisory_lock(0, 4242)")
        assert second.execute("SELECT pg_try_advisory_lock(0, 4242)").fetchone()[0] is True
        second.execute("SELECT pg_advisory_unlock_all()")


@pytest.mark.scenario(
    'Connecting through PgBouncer in transaction mode: refused at start, naming the direct port (CLI '
    'exit 1, no traceback)')
def test_a_transaction_mode_pooler_is_refused(pooled_dsn, tmp_path):
    with pytest.raises(ConfigError, match="transaction-mode connection pooler") as refused:
        engine_for(pooled_dsn, tmp_path / "lake")
    assert "Connect to the server directly (port 55432" in str(refused.value)
    result = subprocess.run([TSARCHIVE, "plan"], env=cli_env(pooled_dsn, tmp_path / "lake"), capture_output=True,
                            text=True)
    assert result.returncode == 1 and "transaction-mode connection pooler" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_direct_connection_is_not_probed(pg_dsn, tmp_path):
    with engine_for(pg_dsn, tmp_path / "lake") as engine:  # the server's port is the one dialled: no probe, no error
        assert engine.conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
