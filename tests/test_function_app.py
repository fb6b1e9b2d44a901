"""The function app: bindings as indexed, and an end-to-end run on Storage queues in Azurite."""

import base64
import json
import time

import azure.functions as func
import psycopg
import pyarrow.parquet as pq
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from deltalake import DeltaTable

from shared_code.ledger import JobState

from .conftest import AZURITE_CONNECTION_STRING, ROOT
from .functions_support import drain, load_app, queue_names, user_function
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions, normalise, rows_of, visible_files


@pytest.mark.parametrize("transport", ["servicebus", "storagequeue"])
def test_bindings(monkeypatch, transport):
    functions = load_app(monkeypatch, transport)
    assert set(functions) == {"planner", "archiver", "dropper", "trigger_archival", "retention_status",
                              "archival_status", "archival_events", "archival_metrics", "retry_job", "health", "readiness",
                              "verify_archives", "drill_status", "restore_archive", "rehydrate_archive", "restore_list",
                              "restore_status"}

    timer = functions["planner"].get_bindings()
    assert [(b.type, b.schedule, b.run_on_startup, b.use_monitor) for b in timer] == \
        [("timerTrigger", "%ARCHIVER_SCHEDULE%", False, True)]

    expected_type = "serviceBusTrigger" if transport == "servicebus" else "queueTrigger"
    expected_connection = "ServiceBusConnection" if transport == "servicebus" else "ArchiverQueueStorage"
    for name, setting in (("archiver", "ARCHIVER_REQUESTS_QUEUE"), ("dropper", "ARCHIVER_CONFIRMATIONS_QUEUE")):
        (binding,) = functions[name].get_bindings()
        assert (binding.type, binding.queue_name, binding.connection) == (expected_type, f"%{setting}%", expected_connection)
        assert str(binding.direction).endswith("IN") or binding.direction == 0

    routes = {}
    for function in functions.values():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            methods = sorted(str(m).split(".")[-1].upper() for m in trigger.methods)
            routes[trigger.route] = (methods, getattr(trigger.auth_level, "value", trigger.auth_level))
    assert routes == {
        "retention/trigger-archival": (["POST"], "function"),
        "retention/status": (["GET"], "function"),
        "archival/status": (["GET"], "function"),
        "archival/events": (["GET"], "function"),
        "archival/metrics": (["GET"], "function"),
        "archival/verify": (["POST"], "function"),
        "archival/drills/{id}": (["GET"], "function"),
        "archival/jobs/{id}/retry": (["POST"], "function"),
        "archival/restore": (["POST"], "function"),
        "archival/rehydrate": (["POST"], "function"),
        "archival/restores": (["GET"], "function"),
        "archival/restores/{id}": (["GET"], "function"),
        "health": (["GET"], "anonymous"),
        "health/ready": (["GET"], "function"),
    }


def test_local_settings_and_host_json_cover_the_bindings(monkeypatch):
    functions = load_app(monkeypatch, "storagequeue")
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    referenced = set()
    for function in functions.values():
        for binding in function.get_bindings():
            for attribute in ("queue_name", "schedule"):
                value = getattr(binding, attribute, None)
                if isinstance(value, str) and value.startswith("%"):
                    referenced.add(value.strip("%"))
            connection = getattr(binding, "connection", None)
            if connection:
                referenced.add(connection)
    assert referenced <= set(values), referenced - set(values)
    assert values["ARCHIVER_REQUESTS_QUEUE"] == "archive-requests"
    assert values["ARCHIVER_CONFIRMATIONS_QUEUE"] == "archive-confirmations"
    host = json.loads((ROOT / "host.json").read_text())
    assert host["functionTimeout"] and host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"] > host["functionTimeout"]
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1
    requirements = (ROOT / "requirements.txt").read_text()
    packages = [line.split("==")[0] for line in requirements.splitlines() if line and not line.startswith("#")]
    assert "azure-functions-worker" not in packages and "azure-functions" in packages


@pytest.fixture
def queue_app(monkeypatch, pg_dsn, tmp_path):
    """A function app on the storagequeue transport against Azurite, PostgreSQL 15 partitions and a local lake."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
        expected = {name: rows_of(conn, f"public.{name}") for name in due}
    names = queue_names(monkeypatch)
    monkeypatch.setenv("ArchiverQueueStorage", AZURITE_CONNECTION_STRING)
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", pg_dsn)
    monkeypatch.setenv("ARCHIVER_LAKE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("ARCHIVER_PARTITIONED_TABLES", "public.events")
    monkeypatch.setenv("ARCHIVER_SCHEDULE", "0 0 2 * * *")
    functions = load_app(monkeypatch, "storagequeue")
    return {"fn": functions, "queues": names, "due": due, "expected": expected, "lake": tmp_path / "lake", "dsn": pg_dsn}


def _call(app, name, *args):
    return user_function(app["fn"], name)(*args)


def _pump(app, queue_setting, function_name, duplicate=False):
    messages = drain(AZURITE_CONNECTION_STRING, app["queues"][queue_setting])
    for message in messages:
        _call(app, function_name, message)
        if duplicate:
            _call(app, function_name, message)
    return messages


@pytest.mark.parametrize("duplicate", [False, True])
def test_end_to_end_on_storage_queues(queue_app, duplicate):
    app = queue_app
    _call(app, "planner", TimerRequest(past_due=True))
    requests = _pump(app, "ARCHIVER_REQUESTS_QUEUE", "archiver", duplicate)
    assert len(requests) == len(app["due"])
    bodies = [json.loads(m.get_body()) for m in requests]
    assert all(b["type"] == "tsarchive.archive-request" and b["version"] == 1 for b in bodies)

    confirmations = _pump(app, "ARCHIVER_CONFIRMATIONS_QUEUE", "dropper", duplicate)
    assert len(confirmations) == len(app["due"]) * (2 if duplicate else 1)
    if duplicate:  # the duplicated confirmations, processed once more each
        for message in confirmations:
            _call(app, "dropper", message)

    jobs = {j.chunk_name: j for j in ledger_jobs(app["dsn"])}
    assert set(jobs) == set(app["due"])
    for name, rows in app["expected"].items():
        job = jobs[name]
        assert job.state == JobState.DROPPED and job.attempts == 1, (name, job.state, job.attempts)
        archived = sorted(tuple(normalise(v) for v in r.values())
                          for r in pq.read_table(app["lake"] / job.lake_paths[0]).to_pylist())
        assert archived == sorted(tuple(normalise(v) for v in r) for r in rows)
    assert len(visible_files(app["lake"])) == len(app["due"])
    (table_dir,) = [p.parent for p in app["lake"].glob("*/_delta_log")]
    assert DeltaTable(str(table_dir)).version() == len(app["due"]) - 1  # one commit per chunk, despite redelivery

    # a second timer run finds nothing new to send
    _call(app, "planner", TimerRequest(past_due=False))
    assert drain(AZURITE_CONNECTION_STRING, app["queues"]["ARCHIVER_REQUESTS_QUEUE"]) == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"type": "mystery", "version": 1}',
                                  b'{"type": "tsarchive.archive-request", "version": 9}',
                                  b'{"type": "tsarchive.archive-request", "version": 1, "job_id": "x"}',
                                  b'{"type": "tsarchive.archive-confirmation", "version": 1}'])
def test_malformed_messages_go_to_the_poison_queue_with_a_reason(queue_app, body):
    app = queue_app
    message = QueueMessage(id="m-1", body=body, dequeue_count=1)
    _call(app, "archiver", message)  # must not raise: a bad message is never retried
    (poisoned,) = drain(AZURITE_CONNECTION_STRING, app["queues"]["ARCHIVER_POISON_QUEUE"])
    envelope = json.loads(poisoned.get_body())
    assert envelope["source_queue"] == app["queues"]["ARCHIVER_REQUESTS_QUEUE"]
    assert envelope["original_message_id"] == "m-1" and envelope["reason"]
    assert base64.b64decode(envelope["body_base64"]) == body


def _geo_app(monkeypatch, pg_dsn, lake_url, column_type, value):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE geo (ts timestamptz NOT NULL, spot {column_type}) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE geo_old PARTITION OF geo FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute(f"INSERT INTO geo VALUES ('2020-01-05', {value})")
    names = queue_names(monkeypatch)
    for key, value in {"ArchiverQueueStorage": AZURITE_CONNECTION_STRING, "ARCHIVER_DATABASE_URL": pg_dsn,
                       "ARCHIVER_LAKE_URL": lake_url, "ARCHIVER_PARTITIONED_TABLES": "public.geo",
                       "ARCHIVER_MAX_ATTEMPTS": "2", "ARCHIVER_RETRY_BACKOFF_SECONDS": "1"}.items():
        monkeypatch.setenv(key, value)
    return load_app(monkeypatch, "storagequeue"), names


def _archive_once(functions, names) -> dict:
    (request,) = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"])
    user_function(functions, "archiver")(request)
    (confirmation,) = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_CONFIRMATIONS_QUEUE"])
    user_function(functions, "dropper")(confirmation)
    return json.loads(confirmation.get_body())


@pytest.mark.scenario('Lake unreachable (transient): retried after the backoff until max attempts, then left failed and visible')
def test_transient_failure_is_retried_with_backoff_then_given_up(monkeypatch, pg_dsn, tmp_path):
    """The lake is unreachable (its folder cannot be created): retried after the backoff, until max attempts."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the lake's folder should be")
    functions, names = _geo_app(monkeypatch, pg_dsn, (blocker / "lake").as_uri(), "int", "1")
    user_function(functions, "planner")(TimerRequest(past_due=False))
    first = _archive_once(functions, names)
    assert first["status"] == "failed" and first["error"]
    # the retry is scheduled with a visibility delay: not receivable at once, receivable after the backoff
    assert drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"]) == []
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.FAILED and job.attempts == 1 and not job.terminal
    time.sleep(2.5)
    (retry,) = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"])
    assert json.loads(retry.get_body())["reason"] == "retry"
    user_function(functions, "archiver")(retry)
    (second,) = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_CONFIRMATIONS_QUEUE"])
    user_function(functions, "dropper")(second)
    # at max attempts the dropper gives up: nothing more is sent, the job stays failed and visible
    time.sleep(2.5)
    assert drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"]) == []
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.FAILED and job.attempts == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM geo_old").fetchone()[0] == 1


@pytest.mark.scenario("Unsupported column type (terminal): fails at once, no retry sent until an operator's retry")
def test_terminal_failure_spends_no_retries(monkeypatch, pg_dsn, tmp_path):
    """An unsupported column type fails the job at once, with the reason; no retry is sent until an operator asks."""
    functions, names = _geo_app(monkeypatch, pg_dsn, (tmp_path / "lake").as_uri(), "point", "point(1,2)")
    user_function(functions, "planner")(TimerRequest(past_due=False))
    first = _archive_once(functions, names)
    assert first["status"] == "failed" and "'spot' has type point" in first["error"]
    time.sleep(2.5)  # past the backoff: still nothing is retried, by the dropper or the planner
    user_function(functions, "planner")(TimerRequest(past_due=False))
    assert drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"]) == []
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.FAILED and job.attempts == 1 and job.terminal and "point" in job.last_error
    code, answer = _http({"fn": functions}, "retry_job", "POST", f"archival/jobs/{job.id}/retry",
                         route_params={"id": str(job.id)})
    assert code == 202
    (again,) = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_REQUESTS_QUEUE"])
    assert json.loads(again.get_body())["reason"] == "manual retry"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM geo_old").fetchone()[0] == 1


def test_openapi_document_matches_the_routes(monkeypatch):
    functions = load_app(monkeypatch, "storagequeue")
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    documented = {(path.lstrip("/"), method.upper()) for path, ops in spec["paths"].items() for method in ops}
    registered = set()
    for function in functions.values():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            registered |= {(trigger.route, str(m).split(".")[-1].upper()) for m in trigger.methods}
    assert documented == registered
    assert spec["paths"]["/health"]["get"]["security"] == []


def _http(app, name, method, route, body=b"", params=None, route_params=None):
    request = func.HttpRequest(method=method, url=f"/api/{route}", body=body, params=params or {},
                               route_params=route_params or {})
    response = _call(app, name, request)
    return response.status_code, json.loads(response.get_body())


@pytest.mark.scenario('Queued restore over HTTP, message delivered twice: runs once, proven per chunk, visible in status')
def test_queued_restore_over_http(queue_app):
    """POST /archival/restore queues a restore-request; the archiver runs it once (a redelivery changes nothing)."""
    app = queue_app
    _call(app, "planner", TimerRequest(past_due=True))
    _pump(app, "ARCHIVER_REQUESTS_QUEUE", "archiver")
    _pump(app, "ARCHIVER_CONFIRMATIONS_QUEUE", "dropper")
    jobs = ledger_jobs(app["dsn"])
    assert jobs and all(j.state == JobState.DROPPED for j in jobs)
    low, high = min(j.range_start for j in jobs), max(j.range_end for j in jobs)
    expected = sum(len(rows) for rows in app["expected"].values())

    for bad, status in ((b"{}", 400), (b'{"hypertable": "public.events"}', 400), (b"[1]", 400),
                        (b'{"hypertable": "public.events", "from": "yesterday"}', 400),
                        (b'{"hypertable": "public.events", "from": "2020-01-01", "colour": 1}', 400),
                        (b'{"hypertable": "x; drop table y", "from": "2020-01-01"}', 400),
                        (b'{"hypertable": "public.nope", "from": "2020-01-01"}', 404)):
        code, answer = _http(app, "restore_archive", "POST", "archival/restore", bad)
        assert code == status and answer["error"], (bad, code, answer)

    body = json.dumps({"hypertable": "public.events", "from": low.isoformat(), "to": high.isoformat()}).encode()
    code, plan = _http(app, "restore_archive", "POST", "archival/restore",
                       json.dumps({**json.loads(body), "dry_run": True}).encode())
    # the HTTP dry run answers from the ledger (no file read): exact here, every chunk lies wholly inside the range
    assert code == 200 and plan["dry_run"] and plan["estimate"] and plan["rows_at_most"] == expected
    assert len(plan["chunks"]) == len(jobs) and all(c["rows_exact"] for c in plan["chunks"])
    code, queued = _http(app, "restore_archive", "POST", "archival/restore", body)
    assert code == 202 and queued["state"] == "queued"
    restore_id = queued["restore_id"]
    (message,) = drain(AZURITE_CONNECTION_STRING, app["queues"]["ARCHIVER_REQUESTS_QUEUE"])
    assert json.loads(message.get_body())["type"] == "tsarchive.restore-request"
    _call(app, "archiver", message)
    _call(app, "archiver", message)  # a duplicate delivery: already finished, nothing runs twice
    code, record = _http(app, "restore_status", "GET", f"archival/restores/{restore_id}",
                         route_params={"id": str(restore_id)})
    assert code == 200 and record["state"] == "done" and record["rows"] == expected, record
    assert all(c["status"] == "restored" and c["row_hash"].startswith("rows128:") for c in record["result"]["chunks"])
    with psycopg.connect(app["dsn"]) as conn:
        assert conn.execute(f"SELECT count(*) FROM {record['target']}").fetchone()[0] == expected
    code, status = _http(app, "archival_status", "GET", "archival/status")
    assert status["restores"] == {"done": 1}
    code, listing = _http(app, "restore_list", "GET", "archival/restores")
    assert [r["id"] for r in listing["restores"]] == [restore_id]
    code, missing = _http(app, "restore_status", "GET", "archival/restores/999", route_params={"id": "999"})
    assert code == 404
