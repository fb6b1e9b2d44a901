"""Hostile input: fuzzed HTTP bodies, parameters and messages never get a 500 or an exception, oversized bodies are
refused, and table names with quotes, semicolons, spaces and unicode go through settings, CLI and HTTP untouched."""

import json
import subprocess

import azure.functions as func
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_code.ledger import JobState
from shared_code.messages import CONFIRMATION_TYPE, REQUEST_TYPE, RESTORE_TYPE
from shared_code.service import handle_archiver_message, handle_confirmation
from shared_code.transport import StorageQueueTransport

from .conftest import AZURITE_CONNECTION_STRING, TSARCHIVE, cli_env, engine_for
from .functions_support import load_app, queue_names, user_function
from .test_http_api import http  # noqa: F401 - the fixture

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
FIELDS = ["hypertable", "older_than", "dry_run", "from", "to", "into", "sample", "allow_duplicates", "skip_present",
          "type", "version", "job_id", "restore_id", "attempt", "table", "chunk", "status", "requested_at", "extra"]
SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=40) | \
    st.sampled_from(["public.events", "events", "2020-01-01", "2020-01-01T00:00:00Z", "x; drop table y", "'\"", "1e999",
                     REQUEST_TYPE, CONFIRMATION_TYPE, RESTORE_TYPE, "archived", "failed", "\u0000", "é☃"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=8)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6).map(lambda d: json.dumps(d).encode()),
    VALUES.map(lambda v: json.dumps(v).encode()),
)
POST_ROUTES = [("trigger_archival", "retention/trigger-archival"), ("verify_archives", "archival/verify"),
               ("restore_archive", "archival/restore"), ("rehydrate_archive", "archival/rehydrate")]


def _check(status: int, body) -> None:
    assert status in (200, 202, 400, 404, 409, 413), (status, body)
    assert isinstance(body, dict)
    if status >= 400:
        assert isinstance(body.get("error"), str) and body["error"]


@FUZZ
@given(route=st.sampled_from(POST_ROUTES), body=BODIES)
@pytest.mark.scenario('Fuzzed bodies (hypothesis) on every POST route: a 2xx or a 4xx with a message, never a 500')
def test_fuzzed_post_bodies_get_a_4xx_with_a_message_never_a_500(http, route, body):  # noqa: F811
    name, url = route
    _check(*http["call"](name, "POST", url=f"/api/{url}", body=body))


@FUZZ
@given(ident=st.text(max_size=30) | st.integers(-2**70, 2**70).map(str),
       params=st.dictionaries(st.sampled_from(["state", "limit", "offset", "table", "x"]), st.text(max_size=20), max_size=4))
@pytest.mark.scenario('Fuzzed ids and query parameters on the GET routes and retry: never a 500')
def test_fuzzed_ids_and_query_parameters(http, ident, params):  # noqa: F811
    call = http["call"]
    _check(*call("retry_job", "POST", body=b"", route_params={"id": ident}))
    _check(*call("restore_status", "GET", route_params={"id": ident}))
    _check(*call("archival_events", "GET", params=params))
    _check(*call("restore_list", "GET", params=params))


@pytest.mark.scenario('Request bodies over 64 KiB: 413 with a message')
def test_oversized_bodies_are_refused(http):  # noqa: F811
    huge = b'{"hypertable": "' + b"x" * (1024 * 1024) + b'"}'
    for name, url in POST_ROUTES:
        status, body = http["call"](name, "POST", url=f"/api/{url}", body=huge)
        assert status == 413 and "at most" in body["error"]


TYPED = st.fixed_dictionaries({"type": st.sampled_from([REQUEST_TYPE, CONFIRMATION_TYPE, RESTORE_TYPE]),
                               "version": st.just(1)},
                              optional={k: VALUES for k in FIELDS if k not in ("type", "version")})
MESSAGES = st.one_of(BODIES, TYPED.map(lambda d: json.dumps(d).encode()))


@pytest.fixture
def message_sink(monkeypatch, pg_dsn, tmp_path):
    queue_names(monkeypatch)
    monkeypatch.setenv("ArchiverQueueStorage", AZURITE_CONNECTION_STRING)
    engine = engine_for(pg_dsn, tmp_path / "lake")
    yield engine, StorageQueueTransport(engine.settings)
    engine.close()


@FUZZ
@given(body=MESSAGES)
@pytest.mark.scenario(
    'Fuzzed messages of every schema to the archiver and dropper handlers: handled or poisoned with '
    'a reason, never raised')
def test_fuzzed_messages_are_handled_or_poisoned_never_raised(message_sink, body):
    engine, transport = message_sink
    for handler in (handle_archiver_message, handle_confirmation):
        outcome = handler(engine, transport, body, "m-fuzz")
        assert isinstance(outcome, str)


ODD_SCHEMA, ODD_TABLE = 'odd "sch"', "we\"ird; drop table x -- ü ☃"


@pytest.mark.scenario(
    'Names with quotes, semicolons, spaces and unicode through settings, CLI and HTTP: archived, '
    'dropped, restored; no other table touched')
def test_odd_names_through_settings_cli_and_http(monkeypatch, pg_dsn, tmp_path):
    """Only catalog-matched names are touched: the table archives, drops and restores, and nothing else is dropped."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        schema, table = '"odd ""sch"""', '"we""ird; drop table x -- ü ☃"'
        conn.execute("CREATE TABLE x (keep int)")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.{table} (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)")
        conn.execute(f"CREATE TABLE {schema}.\"p; 1\" PARTITION OF {schema}.{table} FOR VALUES FROM ('2020-01-01') "
                     "TO ('2020-02-01')")
        conn.execute(f"INSERT INTO {schema}.{table} SELECT '2020-01-01'::timestamptz + i * interval '1 hour', i "
                     "FROM generate_series(0, 99) i")
    lake = tmp_path / "lake"
    qualified = f"{ODD_SCHEMA}.{ODD_TABLE}"
    env = cli_env(pg_dsn, lake, ARCHIVER_PARTITIONED_TABLES=json.dumps([qualified]))
    result = subprocess.run([TSARCHIVE, "run", "--hypertable", qualified], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    restored = subprocess.run([TSARCHIVE, "restore", "--hypertable", qualified, "--to", "2021-01-01", "--json"],
                              env=env, capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    target = json.loads(restored.stdout)["target"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.x')").fetchone()[0] is not None
        left = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (ODD_SCHEMA,)).fetchall()
        assert left == [(ODD_TABLE,)]  # the partition is archived and dropped; its parent stays
        schema_name, table_name = target.split(".", 1)
        count = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
            psycopg.sql.Identifier(schema_name), psycopg.sql.Identifier(table_name))).fetchone()[0]
        assert count == 100
    # the same name over HTTP: a dry-run restore finds it, a near miss is a 404
    queue_names(monkeypatch)
    for key, value in {"ArchiverQueueStorage": AZURITE_CONNECTION_STRING, "ARCHIVER_DATABASE_URL": pg_dsn,
                       "ARCHIVER_LAKE_URL": lake.as_uri(), "ARCHIVER_PARTITIONED_TABLES": json.dumps([qualified])}.items():
        monkeypatch.setenv(key, value)
    functions = load_app(monkeypatch, "storagequeue")
    for name, expected in ((qualified, 200), (qualified + " ", 404), (f"{ODD_SCHEMA}.x", 404)):
        body = json.dumps({"hypertable": name, "to": "2021-01-01", "dry_run": True}).encode()
        response = user_function(functions, "restore_archive")(func.HttpRequest("POST", "/api/archival/restore", body=body))
        assert response.status_code == expected, response.get_body()
    jobs = engine_for(pg_dsn, lake).ledger.all_jobs()
    assert [j.state for j in jobs] == [JobState.DROPPED] and jobs[0].table_name == ODD_TABLE
