"""The platform as it behaves: outages of the database under the real function handlers on Azurite queues, Service Bus
senders under concurrent invocations (real SDK objects), and connections dropped silently behind the app's back."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from shared_code import runtime
from shared_code.database.auth import TCP_KEEPALIVES
from shared_code.ledger import JobState
from shared_code.messages import ArchiveRequest
from shared_code.settings import load_settings
from shared_code.transport import StorageQueueTransport

from .conftest import AZURITE_CONNECTION_STRING
from .functions_support import drain, load_app, queue_names, user_function
from .helpers import TcpProxy, due_partitions, ledger_jobs, make_monthly_partitions, rows_of

BACKOFF = 2  # ARCHIVER_REDELIVERY_BACKOFF_SECONDS in these tests: short, but long enough to see the delay


class SpyTransport:
    """The real Storage queue transport, with every delay it was asked for written down."""

    def __init__(self, inner: StorageQueueTransport) -> None:
        self.inner, self.delays = inner, []

    def __getattr__(self, name):
        method = getattr(self.inner, name)
        if not name.startswith("send_"):
            return method

        def send(*args, **kwargs):
            if "delay" in kwargs:
                self.delays.append((name, kwargs["delay"]))
            return method(*args, **kwargs)

        return send


@pytest.fixture
def outage_app(monkeypatch, pg_dsn, tmp_path):
    """The function app on Azurite queues, reaching PostgreSQL 15 only through a proxy the test can take down."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
        expected = {name: rows_of(conn, f"public.{name}") for name in due}
    port = int(pg_dsn.split("@", 1)[1].split(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(port)
    names = queue_names(monkeypatch)
    for key, value in {"ArchiverQueueStorage": AZURITE_CONNECTION_STRING,
                       "ARCHIVER_DATABASE_URL": pg_dsn.replace(f":{port}/", f":{proxy.port}/"),
                       "ARCHIVER_LAKE_URL": (tmp_path / "lake").as_uri(), "ARCHIVER_PARTITIONED_TABLES": "public.events",
                       "ARCHIVER_REDELIVERY_BACKOFF_SECONDS": str(BACKOFF), "ARCHIVER_REDELIVERY_LIMIT": "3"}.items():
        monkeypatch.setenv(key, value)
    functions = load_app(monkeypatch, "storagequeue")
    spy = SpyTransport(runtime.transport())
    monkeypatch.setattr(runtime, "transport", lambda settings=None: spy)
    runtime.close_idle()
    yield {"fn": functions, "queues": names, "due": due, "expected": expected, "proxy": proxy, "spy": spy, "dsn": pg_dsn}
    runtime.close_idle()
    proxy.close()


def _queue(name: str) -> QueueClient:
    return QueueClient.from_connection_string(AZURITE_CONNECTION_STRING, name)


def _wait_visible(queue: str, count: int, seconds: float = 30) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peeked = list(_queue(queue).peek_messages(max_messages=32))
        if len(peeked) >= count:
            return drain(AZURITE_CONNECTION_STRING, queue)
        time.sleep(0.2)
    raise AssertionError(f"{count} message(s) never became visible on {queue}")


def _nothing_dead_lettered(app) -> None:
    for queue in (app["queues"]["ARCHIVER_POISON_QUEUE"], app["queues"]["ARCHIVER_REQUESTS_QUEUE"] + "-poison",
                  app["queues"]["ARCHIVER_CONFIRMATIONS_QUEUE"] + "-poison"):
        try:
            assert _queue(queue).get_queue_properties().approximate_message_count == 0, queue
        except Exception as missing:  # noqa: BLE001 - a queue nobody ever wrote to does not exist
            assert "QueueNotFound" in str(missing), missing


@pytest.mark.scenario("Database unreachable when the archiver and the dropper get their messages: each invocation ends "
                      "normally, a delayed re-send with backoff waits on the queue, nothing is dead-lettered, and the "
                      "jobs converge (archived once, dropped once) when the database is back")
def test_database_outage_is_ridden_out_with_delayed_resends(outage_app):
    app, proxy, spy = outage_app, outage_app["proxy"], outage_app["spy"]
    requests_queue = app["queues"]["ARCHIVER_REQUESTS_QUEUE"]
    confirmations_queue = app["queues"]["ARCHIVER_CONFIRMATIONS_QUEUE"]
    user_function(app["fn"], "planner")(TimerRequest(past_due=False))
    requests = drain(AZURITE_CONNECTION_STRING, requests_queue)
    assert len(requests) == len(app["due"]) >= 2

    proxy.stop()  # the database goes away, the cached engine's connection with it
    for message in requests:
        user_function(app["fn"], "archiver")(message)  # returns: the host completes the message, spends no delivery
    assert [(name, delay) for name, delay in spy.delays] == [("send_request", timedelta(seconds=BACKOFF))] * len(requests)
    assert list(_queue(requests_queue).peek_messages(max_messages=32)) == []  # re-sent, but not visible yet
    assert _queue(requests_queue).get_queue_properties().approximate_message_count == len(requests)

    resent = _wait_visible(requests_queue, len(requests))  # still down: the second re-send waits twice as long
    assert all(m.dequeue_count == 1 for m in resent)  # new messages: the broker's count toward poison never climbs
    assert sorted(json.loads(m.get_body())["redelivery"] for m in resent) == [1] * len(requests)
    spy.delays.clear()
    for message in resent:
        user_function(app["fn"], "archiver")(message)
    assert {delay for _, delay in spy.delays} == {timedelta(seconds=2 * BACKOFF)}
    _nothing_dead_lettered(app)
    assert all(j.state == JobState.PLANNED and j.attempts == 0 for j in ledger_jobs(app["dsn"]))

    proxy.start()  # back: the waiting re-sends archive every chunk
    for message in _wait_visible(requests_queue, len(requests)):
        assert json.loads(message.get_body())["redelivery"] == 2
        user_function(app["fn"], "archiver")(message)
    confirmations = drain(AZURITE_CONNECTION_STRING, confirmations_queue)
    assert len(confirmations) == len(requests)

    proxy.stop()  # down again when the dropper's turn comes
    spy.delays.clear()
    for message in confirmations:
        user_function(app["fn"], "dropper")(message)
    assert spy.delays == [("send_confirmation", timedelta(seconds=BACKOFF))] * len(confirmations)
    assert all(j.state == JobState.ARCHIVED for j in ledger_jobs(app["dsn"]))

    proxy.start()
    for message in _wait_visible(confirmations_queue, len(confirmations)):
        user_function(app["fn"], "dropper")(message)
    jobs = ledger_jobs(app["dsn"])
    assert {j.chunk_name for j in jobs} == set(app["due"])
    assert all(j.state == JobState.DROPPED and j.attempts == 1 for j in jobs)  # archived once each
    with psycopg.connect(app["dsn"], autocommit=True) as conn:
        left = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert not left & set(app["due"])
    _nothing_dead_lettered(app)


def test_a_spent_redelivery_budget_hands_the_message_back_to_the_broker(outage_app):
    app = outage_app
    user_function(app["fn"], "planner")(TimerRequest(past_due=False))
    message = drain(AZURITE_CONNECTION_STRING, app["queues"]["ARCHIVER_REQUESTS_QUEUE"])[0]
    body = json.loads(message.get_body())
    body["redelivery"] = 3  # ARCHIVER_REDELIVERY_LIMIT in this fixture
    from azure.functions.queue import QueueMessage

    spent = QueueMessage(id="m1", body=json.dumps(body).encode(), dequeue_count=1)
    app["proxy"].stop()
    with pytest.raises(Exception, match="cannot connect to the database"):
        user_function(app["fn"], "archiver")(spent)  # raised: the host's retries, then its poison queue, take over
    assert app["spy"].delays == []


def test_a_malformed_message_is_poisoned_while_the_database_is_down(outage_app):
    from azure.functions.queue import QueueMessage

    app = outage_app
    app["proxy"].stop()
    outcome = user_function(app["fn"], "archiver")(QueueMessage(id="junk", body=b'{"type": "nope"}', dequeue_count=1))
    assert outcome is None  # returned normally
    (poisoned,) = drain(AZURITE_CONNECTION_STRING, app["queues"]["ARCHIVER_POISON_QUEUE"])
    envelope = json.loads(poisoned.get_body())
    assert "unknown message type" in envelope["reason"] and app["proxy"].accepted == 0


@pytest.mark.scenario("Two invocations sending at once on two threads never share a Service Bus client or sender "
                      "(azure-servicebus objects are not thread-safe)")
def test_concurrent_invocations_never_share_a_servicebus_sender(monkeypatch):
    from azure.servicebus import ServiceBusClient, ServiceBusSender

    from shared_code.transport import ServiceBusTransport

    monkeypatch.setenv("ARCHIVER_DATABASE_URL", "postgresql://u@h/db")
    env = {"ServiceBusConnection": "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=send;"
                                   "SharedAccessKey=bm90LWEtcmVhbC1rZXk="}
    transport = ServiceBusTransport(load_settings(), env=env)
    seen: list[tuple[int, int, int, int]] = []  # (thread, client, sender, messages)
    made_by: dict[int, int] = {}
    lock = threading.Lock()
    real_get_sender = ServiceBusClient.get_queue_sender

    keep: list = []  # every client and sender stays referenced, so no id() is reused by a later object

    def get_queue_sender(self, queue_name, **kwargs):
        sender = real_get_sender(self, queue_name, **kwargs)
        keep.extend([self, sender])
        made_by[id(sender)] = id(self)
        return sender

    def send_messages(self, messages, **kwargs):  # the network boundary: everything up to here is the SDK's own
        assert isinstance(self, ServiceBusSender)
        with lock:
            seen.append((threading.get_ident(), made_by[id(self)], id(self), len(messages)))
        time.sleep(0.01)

    monkeypatch.setattr(ServiceBusClient, "get_queue_sender", get_queue_sender)
    monkeypatch.setattr(ServiceBusSender, "send_messages", send_messages)
    monkeypatch.setattr(ServiceBusSender, "_open_with_retry", lambda self: None)  # the AMQP link: network
    monkeypatch.setattr(ServiceBusSender, "close", lambda self: None)
    start = threading.Barrier(2)

    def invocation() -> None:
        start.wait()
        for n in range(20):
            transport.send_request(ArchiveRequest(job_id=n + 1, attempt=1, table="a.b", chunk="a.c",
                                                  requested_at=datetime.now(UTC)))

    threads = [threading.Thread(target=invocation) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 40
    by_thread: dict[int, set[int]] = {}
    clients: dict[int, set[int]] = {}
    for thread, client, sender, _ in seen:
        by_thread.setdefault(thread, set()).add(sender)
        clients.setdefault(thread, set()).add(client)
    assert len(by_thread) == 2
    first, second = by_thread.values()
    assert not first & second  # no sender used by both threads
    (client_a,), (client_b,) = clients.values()
    assert client_a != client_b  # one client per thread, each reused for that thread's sends
    seen.clear()
    transport.send_requests([ArchiveRequest(job_id=n + 1, attempt=1, table="a.b", chunk="a.c",
                                            requested_at=datetime.now(UTC)) for n in range(250)])
    assert [count for *_, count in seen] == [100, 100, 50]  # batched: one sender link, three transfers


def test_connections_carry_tcp_keepalives(monkeypatch, pg_dsn):
    """The kernel socket of the engine's connection has keepalives on, with the idle, interval, count and user
    timeout the DSN asked for."""
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", pg_dsn)
    runtime.close_idle()
    with runtime.engine() as engine:
        sock = socket.socket(fileno=engine.conn.pgconn.socket)
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == int(TCP_KEEPALIVES["keepalives_idle"])
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == int(TCP_KEEPALIVES["keepalives_interval"])
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == int(TCP_KEEPALIVES["keepalives_count"])
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == int(TCP_KEEPALIVES["tcp_user_timeout"])
        finally:
            sock.detach()  # the descriptor stays libpq's
    runtime.close_idle()
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", pg_dsn + "?keepalives_idle=7")
    with runtime.engine() as engine:
        assert engine.conn.info.get_parameters()["keepalives_idle"] == "7"  # a DSN's own choice is kept
    runtime.close_idle()


@pytest.mark.scenario("A cached connection whose flow is dropped silently (a proxy that stops forwarding) is noticed "
                      "within the liveness bound, and the next invocation works on a new connection")
def test_a_silently_dropped_idle_connection_is_noticed_and_replaced(monkeypatch, pg_dsn):
    port = int(pg_dsn.split("@", 1)[1].split(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(port)
    monkeypatch.setenv("ARCHIVER_DATABASE_URL", pg_dsn.replace(f":{port}/", f":{proxy.port}/"))
    runtime.close_idle()
    try:
        with runtime.engine() as engine:
            first = engine
            engine.conn.execute("SELECT 1")
        proxy.freeze_open_flows()  # the flow is gone, silently: no reset, no answer; new flows still go through
        began = time.monotonic()
        with runtime.engine() as engine:  # the next invocation: the kept engine fails its bounded check
            assert engine is not first
            assert engine.conn.execute("SELECT 41 + 1").fetchone()[0] == 42
        waited = time.monotonic() - began
        assert runtime.PROBE_SECONDS <= waited < runtime.PROBE_SECONDS + 10  # noticed by the bound, not the kernel
        assert proxy.accepted >= 2
    finally:
        runtime.close_idle()
        proxy.close()
