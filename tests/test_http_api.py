"""HTTP routes with real func.HttpRequest objects: happy paths and every kind of bad input."""

import json

import azure.functions as func
import psycopg
import pytest

from shared_code import runtime
from shared_code.ledger import JobState

from .conftest import AZURITE_CONNECTION_STRING
from .functions_support import drain, load_app, queue_names, user_function
from .helpers import CountingListener, due_partitions, ledger_jobs, make_monthly_partitions


@pytest.fixture
def http(monkeypatch, pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
    queues = queue_names(monkeypatch)
    for key, value in {"ArchiverQueueStorage": AZURITE_CONNECTION_STRING, "ARCHIVER_DATABASE_URL": pg_dsn,
                       "ARCHIVER_LAKE_URL": (tmp_path / "lake").as_uri(),
                       "ARCHIVER_PARTITIONED_TABLES": "public.events"}.items():
        monkeypatch.setenv(key, value)
    functions = load_app(monkeypatch, "storagequeue")

    def call(name, method="GET", url="/api/x", body=b"", params=None, route_params=None):
        request = func.HttpRequest(method, url, headers={"content-type": "application/json"}, params=params or {},
                                   route_params=route_params or {}, body=body)
        response = user_function(functions, name)(request)
        assert response.mimetype == "application/json"
        return response.status_code, json.loads(response.get_body())

    return {"call": call, "due": due, "queues": queues, "dsn": pg_dsn, "functions": functions}


def test_trigger_archival_dry_run_then_real(http):
    call = http["call"]
    status, body = call("trigger_archival", "POST", body=b'{"dry_run": true}')
    assert status == 200 and body["dry_run"] and body["enqueued"] == []
    assert sorted(p["chunk"].split(".")[1] for p in body["planned"]) == http["due"]
    assert drain(AZURITE_CONNECTION_STRING, http["queues"]["ARCHIVER_REQUESTS_QUEUE"]) == []

    status, body = call("trigger_archival", "POST", body=b'{"hypertable": "public.events"}')
    assert status == 202 and len(body["enqueued"]) == len(http["due"])
    assert len(drain(AZURITE_CONNECTION_STRING, http["queues"]["ARCHIVER_REQUESTS_QUEUE"])) == len(http["due"])
    status, again = call("trigger_archival", "POST", body=b"")
    assert status == 202 and again["enqueued"] == [] and again["skipped_in_flight"] == len(http["due"])


def test_trigger_archival_sends_at_most_its_limit_per_call(http, monkeypatch):
    from shared_code import api

    monkeypatch.setattr(api, "HTTP_ENQUEUE_LIMIT", 1)  # 1,000 in production: bounded well under the 230 s HTTP limit
    call, due = http["call"], http["due"]
    assert len(due) >= 2
    status, body = call("trigger_archival", "POST", body=b"")
    assert status == 202 and len(body["enqueued"]) == 1 and body["remaining"] == len(due) - 1
    status, body = call("trigger_archival", "POST", body=b"")  # the next call goes on where the first stopped
    assert len(body["enqueued"]) == 1 and body["skipped_in_flight"] == 1 and body["remaining"] == len(due) - 2
    sent = drain(AZURITE_CONNECTION_STRING, http["queues"]["ARCHIVER_REQUESTS_QUEUE"])
    assert len({json.loads(m.get_body())["job_id"] for m in sent}) == len(sent) == 2


def test_trigger_archival_older_than_limits_the_chunks(http):
    status, body = http["call"]("trigger_archival", "POST", body=b'{"older_than": "2000-01-01T00:00:00Z"}')
    assert status == 202 and body["enqueued"] == []


@pytest.mark.parametrize("payload, fragment", [
    (b"{not json", "must be JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"table": "x"}', "unknown field"),
    (b'{"dry_run": "maybe"}', "dry_run must be true or false"),
    (b'{"older_than": "last tuesday"}', "ISO 8601"),
    (b'{"older_than": "2999-01-01"}', "in the past"),
    (b'{"hypertable": ""}', "non-empty string"),
])
def test_trigger_archival_bad_input_is_400(http, payload, fragment):
    status, body = http["call"]("trigger_archival", "POST", body=payload)
    assert status == 400 and fragment in body["error"]


def test_unknown_hypertable_is_404(http):
    status, body = http["call"]("trigger_archival", "POST", body=b'{"hypertable": "public.nope"}')
    assert status == 404 and "public.events" in body["known"]


def test_status_events_metrics(http):
    call = http["call"]
    status, body = call("retention_status")
    assert status == 200 and body["retention_days"] == 730
    assert next(t for t in body["tables"] if t["table"] == "public.events")["due"] == len(http["due"])
    call("trigger_archival", "POST", body=b"{}")
    status, body = call("archival_status")
    assert status == 200 and body["jobs"]["planned"] == len(http["due"])
    status, body = call("archival_events", params={"state": "planned", "limit": "1"})
    assert status == 200 and len(body["events"]) == 1 and body["next_offset"] == 1
    status, body = call("archival_events", params={"state": "planned", "limit": "50", "offset": "1"})
    assert len(body["events"]) == len(http["due"]) - 1 and body["next_offset"] is None
    status, body = call("archival_metrics")
    assert status == 200 and body["backlog"] == len(http["due"]) and body["chunks_archived"] == 0


@pytest.mark.parametrize("params, fragment", [({"state": "bogus"}, "unknown state"), ({"limit": "0"}, "between"),
                                              ({"limit": "abc"}, "integer"), ({"offset": "-1"}, "between")])
def test_events_bad_query_is_400(http, params, fragment):
    status, body = http["call"]("archival_events", params=params)
    assert status == 400 and fragment in body["error"]


def test_retry_route(http):
    call = http["call"]
    assert call("retry_job", "POST", route_params={"id": "abc"})[0] == 400
    assert call("retry_job", "POST", route_params={"id": "999"})[0] == 404
    call("trigger_archival", "POST", body=b"{}")
    drain(AZURITE_CONNECTION_STRING, http["queues"]["ARCHIVER_REQUESTS_QUEUE"])
    job = ledger_jobs(http["dsn"])[0]
    status, body = call("retry_job", "POST", route_params={"id": str(job.id)})
    assert status == 409 and body["state"] == "planned"
    with psycopg.connect(http["dsn"], autocommit=True) as conn:
        conn.execute("UPDATE archiver.jobs SET state = 'failed', attempts = 5, last_error = 'boom' WHERE id = %s", (job.id,))
    status, body = call("retry_job", "POST", route_params={"id": str(job.id)})
    assert status == 202 and body["job"]["state"] == "planned" and body["job"]["attempts"] == 0
    (message,) = drain(AZURITE_CONNECTION_STRING, http["queues"]["ARCHIVER_REQUESTS_QUEUE"])
    assert json.loads(message.get_body())["job_id"] == job.id
    user_function(http["functions"], "archiver")(message)
    assert next(j for j in ledger_jobs(http["dsn"]) if j.id == job.id).state == JobState.ARCHIVED


def test_readiness_checks_database_and_lake(http, monkeypatch):
    status, body = http["call"]("readiness")
    assert status == 200 and body == {"status": "healthy", "database": "ok", "lake": "ok"}
    monkeypatch.setenv("ARCHIVER_LAKE_URL", "abfss://c@devstoreaccount1.dfs.core.windows.net/p")
    monkeypatch.setenv("ARCHIVER_LAKE_CONNECTION_STRING",
                       "AccountName=devstoreaccount1;AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    status, body = http["call"]("readiness")
    assert status == 503 and body["database"] == "ok" and body["lake"].startswith("error")


@pytest.mark.scenario("Anonymous GET /api/health: 200 without opening a database connection or naming a dependency")
def test_anonymous_health_touches_no_dependency(http, monkeypatch):
    with CountingListener() as listener:
        monkeypatch.setenv("ARCHIVER_DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{listener.port}/db?sslmode=disable")
        runtime.close_idle()
        status, body = http["call"]("health")
        assert status == 200 and body["status"] == "alive" and set(body) == {"status", "version"}
        assert listener.accepted == 0
        status, body = http["call"]("readiness")  # the keyed route does connect: the listener would have seen it
        assert status == 503 and listener.accepted >= 1 and "secret" not in json.dumps(body)
        status, body = http["call"]("archival_status")  # an unreachable database is 503, not a conflict
        assert status == 503 and "cannot connect to the database" in body["error"] and "secret" not in json.dumps(body)


@pytest.mark.scenario("A request body over 64 KiB: 413 before any database connection is opened")
def test_oversized_body_costs_no_connection(http, monkeypatch):
    huge = b'{"hypertable": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    with CountingListener() as listener:
        monkeypatch.setenv("ARCHIVER_DATABASE_URL", f"postgresql://u@127.0.0.1:{listener.port}/db?sslmode=disable")
        runtime.close_idle()
        for name in ("trigger_archival", "verify_archives", "restore_archive", "retry_job"):
            status, body = http["call"](name, "POST", body=huge, route_params={"id": "1"})
            assert status == 413 and "at most" in body["error"], name
        assert listener.accepted == 0


def test_bad_settings_are_503_not_500(http, monkeypatch):
    monkeypatch.setenv("ARCHIVER_RETENTION_DAYS", "soon")
    status, body = http["call"]("archival_status")
    assert status == 503 and "ARCHIVER_RETENTION_DAYS" in body["error"]


def test_recovery_drill_route_timer_and_status(http, monkeypatch, tmp_path):
    from azure.functions.timer import TimerRequest

    from .conftest import engine_for
    from .functions_support import load_app

    call = http["call"]
    with engine_for(http["dsn"], tmp_path / "lake", partitioned_tables=["public.events"]) as engine:
        assert not engine.run().failed
        victim = engine.ledger.all_jobs()[0]
    requests = http["queues"]["ARCHIVER_REQUESTS_QUEUE"]

    def drill(payload: bytes) -> dict:
        """POST answers 202 at once; the archiver function runs the queued drill; GET shows its outcome."""
        status, queued = call("verify_archives", "POST", body=payload)
        assert status == 202 and queued["state"] == "queued" and queued["status"].endswith(f"/{queued['drill_id']}")
        status, record = call("drill_status", route_params={"id": str(queued["drill_id"])})
        assert status == 200 and record["state"] == "queued"
        (message,) = drain(AZURITE_CONNECTION_STRING, requests)
        assert json.loads(message.get_body())["type"] == "tsarchive.drill-request"
        user_function(http["functions"], "archiver")(message)
        user_function(http["functions"], "archiver")(message)  # a duplicate delivery: finished, not run again
        status, record = call("drill_status", route_params={"id": str(queued["drill_id"])})
        assert status == 200 and record["state"] == "done"
        return record

    record = drill(b'{"sample": 2}')
    assert (record["checked"], record["failed"]) == (2, 0)
    for payload, fragment in [(b'{"sample": 0}', "between 1 and"), (b'{"sample": "x"}', "integer"), (b"[1]", "object"),
                              (b"{", "must be JSON"), (b'{"hypertable": ""}', "non-empty")]:
        status, body = call("verify_archives", "POST", body=payload)
        assert status == 400 and fragment in body["error"], (payload, body)
    assert call("drill_status", route_params={"id": "999"})[0] == 404
    assert call("drill_status", route_params={"id": "x"})[0] == 400
    (tmp_path / "lake" / victim.lake_paths[0]).write_bytes(b"not parquet")
    record = drill(b'{"sample": 1000}')
    assert record["failed"] == 1 and record["problems"][0]["job_id"] == victim.id
    status, body = call("archival_status")
    assert body["last_drill"]["failed"] == 1 and body["last_drill"]["checked"] == len(http["due"])

    assert "drill" not in http["functions"]  # off unless scheduled
    monkeypatch.setenv("ARCHIVER_DRILL_SCHEDULE", "0 0 3 * * 0")
    monkeypatch.setenv("ARCHIVER_DRILL_SAMPLE", "1")
    functions = load_app(monkeypatch, "storagequeue")
    bindings = functions["drill"].get_bindings()
    assert [(b.type, b.schedule) for b in bindings] == [("timerTrigger", "%ARCHIVER_DRILL_SCHEDULE%")]
    user_function(functions, "drill")(TimerRequest(past_due=False))
    status, body = call("archival_status")
    assert body["last_drill"]["checked"] == 1
