"""The whole pipeline as the least-privilege role of docs/deploy.md (its SQL block, run verbatim), on PostgreSQL 15
partitions and native TimescaleDB with a continuous aggregate: plan, archive, drop, status and restore. A missing
grant stops only what needs it, with a message naming the grant."""

import re
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from shared_code import api
from shared_code.errors import render_error
from shared_code.ledger import JobState
from shared_code.planning import Decision
from shared_code.restore import restore_range

from .conftest import ROOT, engine_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # pinned; the data is from 2020, so every closed chunk is due
ROLE_SQL = re.search(r"```sql\n(CREATE ROLE <owner>.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S).group(1)


def _as(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def _grant(conn, *, owner: str, archiver: str, table: str, cagg: str | None, timescale: bool, skip: str = "") -> None:
    """The docs' block with its placeholders filled in; `skip` leaves out the lines containing it (a missing grant)."""
    database = conn.execute("SELECT current_database()").fetchone()[0]
    for statement in ROLE_SQL.split(";"):
        statement = re.sub(r"--[^\n]*", "", statement).strip()
        if not statement or ("metrics_daily" in statement and cagg is None):
            continue
        statement = (statement.replace("<owner>", owner).replace("<archiver>", archiver)
                     .replace("<database>", f'"{database}"').replace("public.metrics_daily", cagg or "")
                     .replace("public.metrics", table))
        if skip and skip in statement:
            continue
        if not timescale:
            statement = statement.replace(", _timescaledb_internal", "")
        conn.execute(statement)


@pytest.fixture
def roles(request):
    suffix = uuid.uuid4().hex[:8]
    names = {"owner": f"owner_{suffix}", "archiver": f"archiver_{suffix}", "password": f"pw-{suffix}"}
    yield names
    dsn = request.node.funcargs.get("server_dsn")
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in (names["archiver"], names["owner"]):
                conn.execute(f"DROP OWNED BY {role} CASCADE")
        with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            for role in (names["archiver"], names["owner"]):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def _pg_source(conn) -> list[str]:
    conn.execute("CREATE TABLE public.events (ts timestamptz NOT NULL, device int, value float8) PARTITION BY RANGE (ts)")
    partitions = []
    for month in (1, 2, 3):
        name = f"events_2020_{month:02d}"
        conn.execute(f"CREATE TABLE public.{name} PARTITION OF public.events FOR VALUES FROM ('2020-{month:02d}-01') "
                     f"TO ('2020-{month + 1:02d}-01')")
        partitions.append(name)
    conn.execute("INSERT INTO public.events SELECT t, (extract(epoch FROM t)::int % 7), random() "
                 "FROM generate_series('2020-01-01'::timestamptz, '2020-03-31 23:00', '1 hour') t")
    conn.execute("CREATE TABLE public.events_copy AS SELECT * FROM public.events")
    return partitions


def _tsdb_source(conn) -> None:
    conn.execute("CREATE TABLE public.metrics (ts timestamptz NOT NULL, device int, value float8)")
    conn.execute("SELECT create_hypertable('public.metrics', by_range('ts', INTERVAL '7 days'))")
    conn.execute("INSERT INTO public.metrics SELECT t, (extract(epoch FROM t)::int % 7), random() "
                 "FROM generate_series('2020-01-01'::timestamptz, '2020-02-29 23:00', '1 hour') t")
    conn.execute("CREATE MATERIALIZED VIEW public.metrics_daily WITH (timescaledb.continuous) AS "
                 "SELECT time_bucket('1 day', ts) AS day, device, avg(value) FROM public.metrics GROUP BY 1, 2")
    conn.execute("CREATE TABLE public.metrics_copy AS SELECT * FROM public.metrics")


@pytest.fixture(params=["pg15", "native"])
def server_dsn(request):
    """A fresh database on PostgreSQL 15, or on native TimescaleDB (the WASM build has no roles to speak of)."""
    return request.getfixturevalue("pg_dsn") if request.param == "pg15" else request.getfixturevalue("native_tsdb").dsn


def _setup(server_dsn, roles, skip: str = ""):
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        timescale = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        conn.execute(f"CREATE ROLE {roles['archiver']} LOGIN PASSWORD '{roles['password']}'")
        if timescale:
            _tsdb_source(conn)
            table, cagg = "public.metrics", "public.metrics_daily"
        else:
            partitions = _pg_source(conn)
            table, cagg = "public.events", None
        _grant(conn, owner=roles["owner"], archiver=roles["archiver"], table=table, cagg=cagg, timescale=timescale,
               skip=skip)
        if not timescale:  # ALTER TABLE ... OWNER does not recurse into partitions (docs/deploy.md)
            for name in partitions:
                if not skip or "OWNER" not in skip:
                    conn.execute(f"ALTER TABLE public.{name} OWNER TO {roles['owner']}")
    settings = {} if timescale else {"partitioned_tables": ["public.events"]}
    return _as(server_dsn, roles["archiver"], roles["password"]), table, settings


@pytest.mark.scenario(
    'The least-privilege role of docs/deploy.md (its SQL run verbatim): plan, archive, drop, status '
    'and restore succeed')
def test_the_documented_role_runs_the_whole_pipeline(server_dsn, roles, tmp_path):
    dsn, table, settings = _setup(server_dsn, roles)
    lake = tmp_path / "lake"
    with engine_for(dsn, lake, now=NOW, **settings) as engine:
        assert engine.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
        due = [e for e in engine.plan() if e.decision == Decision.DUE]
        assert due
        report = engine.run()
        assert not report.failed, report.failed
        jobs = [j for j in engine.ledger.all_jobs() if j.state != JobState.BLOCKED]  # blocked: the aggregate's window
        assert len(jobs) == len(due) and all(j.state == JobState.DROPPED for j in jobs)
        assert api.archival_status(engine).status == 200 and api.archival_metrics(engine).body["chunks_dropped"] == len(due)
        result = restore_range(engine, table, None, datetime(2021, 1, 1, tzinfo=UTC))
        assert result.rows == sum(j.row_count for j in jobs)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        back = conn.execute(f"SELECT count(*) FROM (SELECT * FROM {result.target} EXCEPT ALL "
                            f"SELECT * FROM {table}_copy) d").fetchone()[0]
        assert back == 0 and conn.execute(f"SELECT count(*) FROM {result.target}").fetchone()[0] == result.rows


@pytest.mark.scenario('Role without its ledger schema: the error names the missing grant')
def test_a_missing_schema_grant_is_named(server_dsn, roles, tmp_path):
    dsn, _, settings = _setup(server_dsn, roles, skip="CREATE SCHEMA archiver AUTHORIZATION")
    with engine_for(dsn, tmp_path / "lake", now=NOW, **settings) as engine, \
            pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
        engine.init()
    message = render_error(denied.value)
    assert "permission denied for database" in message
    assert "CREATE SCHEMA archiver (and archiver_restore) AUTHORIZATION" in message


@pytest.mark.scenario(
    "Role not a member of the tables' owner: jobs fail at once as terminal (no retries spent) naming "
    'GRANT <owner> TO <role>; on TimescaleDB the table is skipped, naming the aggregate')
def test_a_missing_membership_fails_the_jobs_at_once_naming_the_grant(server_dsn, roles, tmp_path):
    dsn, _, settings = _setup(server_dsn, roles, skip=f"GRANT {roles['owner']} TO")
    with engine_for(dsn, tmp_path / "lake", now=NOW, **settings) as engine:
        if engine.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            # the aggregate's watermark is the first thing it cannot read: that table is skipped, named
            entries = engine.plan()
            assert entries and all(e.decision == Decision.SKIPPED for e in entries)
            assert "permission denied for materialized view metrics_daily" in entries[0].reason
            assert "GRANT <owner> TO <role>" in entries[0].reason
            return
        report = engine.run()
        assert report.failed
        jobs = engine.ledger.all_jobs()
        assert all(j.state == JobState.FAILED and j.terminal and j.attempts == 1 for j in jobs)
        assert "GRANT <owner> TO <role>" in jobs[0].last_error
        assert engine.runnable_jobs() and not engine.ledger.enqueueable(0, 5)  # only an operator's run retries it


@pytest.mark.scenario('Role without the restore schema: restore stops, naming the grant')
def test_restore_needs_its_schema(server_dsn, roles, tmp_path):
    dsn, table, settings = _setup(server_dsn, roles, skip="archiver_restore")
    with engine_for(dsn, tmp_path / "lake", now=NOW, **settings) as engine:
        assert not engine.run().failed
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as denied:
            restore_range(engine, table, None, datetime(2021, 1, 1, tzinfo=UTC))
    assert "CREATE SCHEMA archiver" in render_error(denied.value)
