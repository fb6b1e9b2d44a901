"""The function app keeps its engines (and their connections) between invocations of one instance."""

import psycopg

from shared_code import runtime

from .conftest import settings_for


def test_invocations_reuse_one_engine_and_replace_a_broken_one(pg_dsn, tmp_path):
    settings = settings_for(pg_dsn, tmp_path / "lake")
    with runtime.engine(settings) as first:
        pid = first.conn.info.backend_pid
    with runtime.engine(settings) as second:
        assert second is first and second.conn.info.backend_pid == pid  # no new connection
    other = settings_for(pg_dsn, tmp_path / "other-lake")
    with runtime.engine(other) as third:
        assert third is not first  # different settings never share an engine
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with runtime.engine(settings) as fourth:
        assert fourth is not first and fourth.conn.execute("SELECT 1").fetchone() == (1,)
    assert first.conn.closed


def test_an_invocation_that_fails_does_not_return_its_engine(pg_dsn, tmp_path):
    settings = settings_for(pg_dsn, tmp_path / "lake")
    try:
        with runtime.engine(settings) as failing:
            raise RuntimeError("the invocation failed")
    except RuntimeError:
        pass
    assert failing.conn.closed
    with runtime.engine(settings) as fresh:
        assert fresh is not failing
