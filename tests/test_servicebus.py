"""Service Bus at the SDK boundary (no broker runs here): the real azure-servicebus message objects, a recording sender,
and the real azure.functions ServiceBusMessage driving the triggers."""

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from azure.functions.servicebus import ServiceBusMessage as TriggerMessage
from azure.servicebus import ServiceBusMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared_code.ledger import JobState
from shared_code.messages import ArchiveRequest
from shared_code.settings import load_settings
from shared_code.transport import ServiceBusTransport

from .functions_support import load_app, user_function
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracing():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


class RecordingSender:
    def __init__(self, queue: str, log: list):
        self.queue, self.log = queue, log

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def send_messages(self, messages):
        for message in messages if isinstance(messages, list) else [messages]:
            assert isinstance(message, ServiceBusMessage)  # the SDK's own type, as the broker would receive it
            self.log.append((self.queue, message))


class RecordingClient:
    """Stands in for azure.servicebus.ServiceBusClient: records what would reach the broker."""

    def __init__(self):
        self.sent: list[tuple[str, ServiceBusMessage]] = []

    def get_queue_sender(self, queue_name: str):
        return RecordingSender(queue_name, self.sent)


def _body(message: ServiceBusMessage) -> dict:
    return json.loads(b"".join(message.body))


def test_request_message_at_the_sdk_boundary(monkeypatch):
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    client = RecordingClient()
    transport = ServiceBusTransport(load_settings(), env={}, client_factory=lambda: client)
    with trace.get_tracer("test").start_as_current_span("parent") as parent:
        from shared_code import telemetry

        request = ArchiveRequest(job_id=7, attempt=3, table="public.metrics", chunk="_timescaledb_internal._hyper_1_2_chunk",
                                 requested_at=datetime(2026, 1, 1, tzinfo=UTC), traceparent=telemetry.inject())
        transport.send_request(request)
        transport.send_request(request)  # an SDK-level re-send keeps the id: broker duplicate detection drops it
    (queue, first), (_, second) = client.sent
    assert queue == "archive-requests"
    assert first.message_id == second.message_id == "tsarchive-req-7-3"
    assert first.content_type == "application/json"
    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in first.application_properties.items()}
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert trace_id in props["traceparent"] and props["Diagnostic-Id"] == props["traceparent"]
    assert props["job_id"] == 7 and props["tsarchive_type"] == "tsarchive.archive-request"
    assert _body(first)["chunk"] == "_timescaledb_internal._hyper_1_2_chunk"


def test_delayed_retry_is_scheduled(monkeypatch):
    from datetime import timedelta

    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    client = RecordingClient()
    transport = ServiceBusTransport(load_settings(), env={}, client_factory=lambda: client)
    request = ArchiveRequest(job_id=1, attempt=2, table="t.t", chunk="t.c", requested_at=datetime.now(UTC))
    transport.send_request(request, delay=timedelta(minutes=5))
    (_, message), = client.sent
    assert message.scheduled_enqueue_time_utc > datetime.now(UTC) + timedelta(minutes=4)


def test_missing_connection_is_a_clear_error(monkeypatch):
    from shared_code.errors import ConfigError

    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    transport = ServiceBusTransport(load_settings(), env={})
    with pytest.raises(ConfigError, match="ServiceBusConnection__fullyQualifiedNamespace"):
        transport.send_request(ArchiveRequest(job_id=1, attempt=1, table="a.b", chunk="a.c",
                                              requested_at=datetime.now(UTC)))


def _as_trigger(message: ServiceBusMessage, delivery: int = 1) -> TriggerMessage:
    """What the Functions host hands the function for a message the broker received."""
    return TriggerMessage(body=b"".join(message.body), message_id=message.message_id, content_type=message.content_type,
                          delivery_count=delivery, user_properties=dict(message.application_properties or {}),
                          application_properties=dict(message.application_properties or {}))


def test_servicebus_pipeline_end_to_end(monkeypatch, pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25)
        due = due_partitions(conn, "public.events")
    for key, value in {"ARCHIVER_DATABASE_URL": pg_dsn, "ARCHIVER_LAKE_URL": (tmp_path / "lake").as_uri(),
                       "ARCHIVER_PARTITIONED_TABLES": "public.events",
                       "ServiceBusConnection__fullyQualifiedNamespace": "example.servicebus.windows.net"}.items():
        monkeypatch.setenv(key, value)
    client = RecordingClient()
    monkeypatch.setattr(ServiceBusTransport, "client", property(lambda self: client))
    _EXPORTER.clear()
    functions = load_app(monkeypatch, "servicebus")

    from azure.functions.timer import TimerRequest

    user_function(functions, "planner")(TimerRequest(past_due=False))
    requests = [m for q, m in client.sent if q == "archive-requests"]
    assert len(requests) == len(due)
    client.sent.clear()
    for message in requests:
        user_function(functions, "archiver")(_as_trigger(message))
        user_function(functions, "archiver")(_as_trigger(message, delivery=2))  # redelivery
    confirmations = [m for q, m in client.sent if q == "archive-confirmations"]
    assert len(confirmations) == 2 * len(due)
    assert len({m.message_id for m in confirmations}) == len(due)  # duplicates share an id: the broker drops them
    for message in confirmations:
        user_function(functions, "dropper")(_as_trigger(message))
    jobs = ledger_jobs(pg_dsn)
    assert {j.chunk_name for j in jobs} == set(due)
    assert all(j.state == JobState.DROPPED and j.attempts == 1 for j in jobs)

    spans = _EXPORTER.get_finished_spans()
    names = {s.name for s in spans}
    expected = {"planner", "plan", "archive", "extract", "write", "verify", "drop"}
    assert {f"tsarchive.{name}" for name in expected} <= names
    # the archive and drop spans of one chunk sit in the planner's trace, linked through the messages
    planner_trace = next(s for s in spans if s.name == "tsarchive.planner").context.trace_id
    assert {s.context.trace_id for s in spans if s.name in ("tsarchive.archive", "tsarchive.drop")} == {planner_trace}


def test_malformed_servicebus_message_is_forwarded_with_reason(monkeypatch, pg_dsn, tmp_path):
    for key, value in {"ARCHIVER_DATABASE_URL": pg_dsn, "ARCHIVER_LAKE_URL": (tmp_path / "lake").as_uri(),
                       "ServiceBusConnection__fullyQualifiedNamespace": "example.servicebus.windows.net"}.items():
        monkeypatch.setenv(key, value)
    client = RecordingClient()
    monkeypatch.setattr(ServiceBusTransport, "client", property(lambda self: client))
    functions = load_app(monkeypatch, "servicebus")
    bad = TriggerMessage(body=b'{"type": "tsarchive.archive-confirmation", "version": 2}', message_id="abc",
                         delivery_count=1, user_properties={}, application_properties={})
    user_function(functions, "dropper")(bad)
    (queue, message), = client.sent
    assert queue == "archive-poison"
    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in message.application_properties.items()}
    reason = props["reason"].decode() if isinstance(props["reason"], bytes) else props["reason"]
    assert "unsupported" in reason and "version 2" in reason


def test_inside_an_exporting_worker_the_app_configures_no_second_exporter(monkeypatch):
    import azure.monitor.opentelemetry as distro

    from shared_code import telemetry

    calls = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "true")
    assert telemetry.configure() is False and calls == []  # the worker exports: a second exporter doubles every record
    monkeypatch.delenv("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY")
    assert telemetry.configure() is True and [c["logger_name"] for c in calls] == ["tsarchive"]  # the CLI's case
    monkeypatch.setattr(telemetry, "_configured", False)
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    app = (Path(__file__).resolve().parent.parent / "infra" / "modules" / "function-app.bicep").read_text()
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'" in app


def test_spans_stay_in_the_invocation_and_link_the_message_trace():
    from shared_code import telemetry

    _EXPORTER.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("planner-run") as planner:
        carried = telemetry.inject()
    # the worker attaches an invocation span per invocation; the handler's spans must stay under it
    with tracer.start_as_current_span("worker-invocation") as invocation, telemetry.continued(carried), \
            telemetry.span("archive", job_id=1):
        pass
    (archive,) = [s for s in _EXPORTER.get_finished_spans() if s.name == "tsarchive.archive"]
    assert archive.parent.span_id == invocation.get_span_context().span_id
    assert archive.context.trace_id == invocation.get_span_context().trace_id
    assert [link.context.span_id for link in archive.links] == [planner.get_span_context().span_id]
    _EXPORTER.clear()
    with telemetry.continued(carried), telemetry.span("drop", job_id=1):  # no invocation context (CLI, tests)
        pass
    (drop,) = _EXPORTER.get_finished_spans()
    assert drop.context.trace_id == planner.get_span_context().trace_id and not drop.links
