"""Fixtures over the real local services started by `make services`: PostgreSQL 15, TimescaleDB (WASM), Azurite."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from shared_code.engine import Engine
from shared_code.settings import Settings, load_settings

PG_PORT = int(os.environ.get("TSARCHIVE_PG_PORT", "55432"))
TSDB_PORT = int(os.environ.get("TSARCHIVE_TSDB_PORT", "55433"))
NATIVE_PORT = int(os.environ.get("TSARCHIVE_NATIVE_PORT", "55434"))
NATIVE_ADMIN = f"postgresql://postgres@127.0.0.1:{NATIVE_PORT}/postgres"
PG_ADMIN = os.environ.get("TSARCHIVE_TEST_PG_URL", f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres")
TSDB_URL = os.environ.get(
    "TSARCHIVE_TEST_TSDB_URL", f"postgresql://postgres:postgres@127.0.0.1:{TSDB_PORT}/postgres?sslmode=disable"
)
AZURITE_BLOB_PORT = int(os.environ.get("TSARCHIVE_AZURITE_BLOB_PORT", "10000"))
AZURITE_QUEUE_PORT = int(os.environ.get("TSARCHIVE_AZURITE_QUEUE_PORT", "10001"))
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{AZURITE_BLOB_PORT}/devstoreaccount1;"
    f"QueueEndpoint=http://127.0.0.1:{AZURITE_QUEUE_PORT}/devstoreaccount1;"
)
ROOT = Path(__file__).resolve().parent.parent

# Dates spread over a year (year end, a month start after February, mid-year with odd seconds, a quarter end) at which
# the planning-sensitive tests also run, so none of them depends on where today falls between chunk boundaries.
SAMPLE_NOWS = ("2025-12-31T23:30:00+00:00", "2026-03-01T00:00:00+00:00", "2026-06-15T12:34:56+00:00",
               "2026-09-30T07:00:00+00:00")


def parse_now(text: str) -> datetime:
    """An ISO 8601 instant with a UTC offset (or Z), as an aware UTC datetime."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; write e.g. 2026-02-10T03:00:00+00:00")
    return value.astimezone(UTC)


def pytest_report_header(config: pytest.Config) -> str | None:
    raw = os.environ.get("TSARCHIVE_TEST_NOW")
    return f"TSARCHIVE_TEST_NOW={raw} (injected clock for time-relative tests)" if raw else None


def _require(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pytest.fail(f"{what} is not listening on 127.0.0.1:{port}; run `make services` (make test does it)")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ARCHIVER_") or name == "TSARCHIVE_CRASH_AT":
            monkeypatch.delenv(name, raising=False)
    yield
    from shared_code import runtime

    runtime.close_idle()  # engines the function app kept for its next invocation


@pytest.fixture
def test_now() -> datetime:
    """The instant time-relative tests build their data around and give the engine as its clock.

    TSARCHIVE_TEST_NOW (ISO 8601 with an offset) pins it to reproduce a date-dependent failure; otherwise the real time.
    """
    raw = os.environ.get("TSARCHIVE_TEST_NOW")
    if not raw:
        return datetime.now(UTC)
    try:
        return parse_now(raw)
    except ValueError as error:
        pytest.fail(f"TSARCHIVE_TEST_NOW: {error}")


@pytest.fixture(params=[*SAMPLE_NOWS, None], ids=[*SAMPLE_NOWS, "test_now"])
def sample_now(request: pytest.FixtureRequest, test_now: datetime) -> datetime:
    """Each of SAMPLE_NOWS, then `test_now`: for tests whose planning depends on where now falls."""
    return parse_now(request.param) if request.param else test_now


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh, empty PostgreSQL 15 database."""
    _require(PG_PORT, "PostgreSQL 15")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    yield dsn
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Tsdb:
    """A private schema (and ledger schema) in the shared TimescaleDB test server."""

    def __init__(self, dsn: str, schema: str, ledger: str) -> None:
        self.dsn, self.schema, self.ledger = dsn, schema, ledger

    def connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.execute("SET client_min_messages = warning")
        return conn


@pytest.fixture
def tsdb() -> Iterator[Tsdb]:
    _require(TSDB_PORT, "the TimescaleDB test server")
    suffix = uuid.uuid4().hex[:8]
    box = Tsdb(TSDB_URL, f"ts_{suffix}", f"ledger_{suffix}")
    with box.connect() as conn:
        conn.execute(f"CREATE SCHEMA {box.schema}")
    yield box
    with box.connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {box.schema} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {box.ledger} CASCADE")


@pytest.fixture(params=["wasm", "native"])
def timescale(request: pytest.FixtureRequest) -> Iterator[Tsdb]:
    """TimescaleDB twice: the WASM build (2.23, PostgreSQL 17) and native 2.28.3 on PostgreSQL 15 (`make tsdb-native`)."""
    yield request.getfixturevalue("tsdb" if request.param == "wasm" else "native_tsdb")


@pytest.fixture
def native_tsdb() -> Iterator[Tsdb]:
    """A fresh database with the timescaledb extension on the native TimescaleDB 2.28.3 server."""
    try:
        socket.create_connection(("127.0.0.1", NATIVE_PORT), timeout=1).close()
    except OSError:
        pytest.skip(f"native TimescaleDB is not running on {NATIVE_PORT}: `make tsdb-native services` builds and starts it")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(NATIVE_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = NATIVE_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    box = Tsdb(dsn, "ts_native", "ledger_native")
    with box.connect() as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        conn.execute(f"CREATE SCHEMA {box.schema}")
    yield box
    with psycopg.connect(NATIVE_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def azurite_container() -> Iterator[str]:
    _require(AZURITE_BLOB_PORT, "Azurite")
    from azure.storage.blob import BlobServiceClient

    name = f"lake{uuid.uuid4().hex[:10]}"
    service = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING)
    service.create_container(name)
    yield name
    service.delete_container(name)


def settings_for(dsn: str, lake: Path | str, **overrides) -> Settings:
    lake_url = lake if isinstance(lake, str) else lake.as_uri()
    return load_settings(database_url=dsn, lake_url=lake_url, **overrides)


def engine_for(dsn: str, lake: Path | str, *, now: datetime | None = None, **overrides) -> Engine:
    """An Engine over `dsn`; with `now`, its clock is pinned there (give the data the same `now`)."""
    settings = settings_for(dsn, lake, **overrides)
    if now is None:
        return Engine(settings)
    if now.tzinfo is None:
        raise ValueError("engine_for(now=...) needs an aware datetime")
    pinned = now.astimezone(UTC)
    return Engine(settings, clock=lambda: pinned)


def cli_env(dsn: str, lake: Path | str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env["ARCHIVER_DATABASE_URL"] = dsn
    env["ARCHIVER_LAKE_URL"] = lake if isinstance(lake, str) else lake.as_uri()
    env.update(extra)
    return env


TSARCHIVE = str(ROOT / ".venv" / "bin" / "tsarchive")


# -- docs/reliability.md: the scenario -> result table, written from a test run (make reliability) -----------------
_SCENARIOS: list[dict[str, object]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("scenario")
    if marker is None or not (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        return
    _SCENARIOS.append({"scenario": marker.args[0], "test": item.nodeid, "outcome": report.outcome,
                       "seconds": report.duration})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("TSARCHIVE_RELIABILITY_REPORT")
    if not target or not _SCENARIOS:
        return
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = ["# Reliability: scenarios and their measured outcome", "",
             f"Generated by `make reliability` from a test run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit "
             f"`{commit or 'unknown'}`; do not edit by hand. Each row is a test against real PostgreSQL 15, TimescaleDB "
             "(native, Apache edition, WASM), Azurite queues and blobs, and PgBouncer; the test's assertions are the "
             "expected result (`outcome` passed means they all held).", "",
             "| Scenario | Outcome | Seconds | Test |", "|---|---|---|---|"]
    for row in sorted(_SCENARIOS, key=lambda r: str(r["test"])):
        lines.append(f"| {row['scenario']} | {row['outcome']} | {float(row['seconds']):.1f} | `{row['test']}` |")
    Path(target).write_text("\n".join(lines) + "\n")
