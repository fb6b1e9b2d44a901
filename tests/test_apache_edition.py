"""The Apache-2 edition of TimescaleDB, as Azure Database for PostgreSQL runs it (`timescaledb.license = 'apache'`):
no compression, no continuous aggregates, no policies. The whole pipeline works there: plan, archive, drop, status
and a proven restore. `make services` starts such a server on TSARCHIVE_APACHE_PORT (55436) when TimescaleDB is built."""

import os
import socket
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from shared_code import api
from shared_code.ledger import JobState
from shared_code.restore import restore_range

from .conftest import engine_for

APACHE_PORT = int(os.environ.get("TSARCHIVE_APACHE_PORT", "55436"))
ADMIN = f"postgresql://postgres@127.0.0.1:{APACHE_PORT}/postgres"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def apache_dsn():
    try:
        socket.create_connection(("127.0.0.1", APACHE_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"no Apache-edition TimescaleDB on {APACHE_PORT}: `make tsdb-native services` starts one")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    yield dsn
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.scenario(
    'TimescaleDB Apache-2 edition (timescaledb.license=apache): plan, archive, drop, deep drill, '
    'restore into the hypertable')
def test_the_whole_pipeline_on_the_apache_edition(apache_dsn, tmp_path):
    with psycopg.connect(apache_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW timescaledb.license").fetchone()[0] == "apache"
        conn.execute("CREATE TABLE metrics (ts timestamptz NOT NULL, device int, value float8)")
        conn.execute("SELECT create_hypertable('metrics', by_range('ts', INTERVAL '7 days'))")
        conn.execute("INSERT INTO metrics SELECT t, (extract(epoch FROM t)::int % 5), random() "
                     "FROM generate_series('2020-01-01'::timestamptz, '2020-03-31', '30 minutes') t")
        conn.execute("CREATE TABLE metrics_copy AS TABLE metrics")
        with pytest.raises(psycopg.errors.FeatureNotSupported):  # the premise: this is the Apache edition
            conn.execute("ALTER TABLE metrics SET (timescaledb.compress)")
    lake = tmp_path / "lake"
    with engine_for(apache_dsn, lake, now=NOW) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        jobs = engine.ledger.all_jobs()
        assert jobs and all(j.state == JobState.DROPPED for j in jobs)
        assert api.archival_status(engine).body["jobs"]["dropped"] == len(jobs)
        assert all(r.outcome == "done" for r in engine.verify(deep=True))
        result = restore_range(engine, "public.metrics", datetime(2020, 1, 1, tzinfo=UTC), None, into="public.metrics")
    assert result.rows == sum(j.row_count for j in jobs)
    with psycopg.connect(apache_dsn, autocommit=True) as conn:
        for a, b in (("metrics", "metrics_copy"), ("metrics_copy", "metrics")):
            assert conn.execute(f"SELECT count(*) FROM (TABLE {a} EXCEPT ALL TABLE {b}) d").fetchone()[0] == 0
