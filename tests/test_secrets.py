"""No secret leaves the process: a whole cycle (planner, archiver, dropper, restore, status; CLI and the function
handlers) runs with a password in the database URL and an account key in the lake and queue connection strings, and
every log record, CLI output, span and metric attribute and queued message is searched for them."""

import json
import subprocess
import sys

import psycopg
import pytest

from .conftest import AZURITE_CONNECTION_STRING, AZURITE_KEY, ROOT, TSARCHIVE, cli_env
from .functions_support import drain, queue_names
from .helpers import make_monthly_partitions

PASSWORD = "Pa55-w0rd-never-logged"

# Runs in a fresh interpreter so that OpenTelemetry's SDK providers (in memory) are installed before tsarchive's
# tracer and meter are first used: every span and metric point the code emits is then captured.
SCRIPT = r"""
import json, logging, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s %(args)s")

from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from shared_code import service
from shared_code.engine import Engine
from shared_code.restore import restore_range
from shared_code.settings import load_settings
from shared_code.transport import StorageQueueTransport
import os

settings = load_settings()
engine = Engine(settings)
transport = StorageQueueTransport(settings)
messages = []

def pump(queue, handler):
    client = QueueClient.from_connection_string(os.environ["ArchiverQueueStorage"], queue,
                                                message_decode_policy=TextBase64DecodePolicy())
    for message in client.receive_messages(max_messages=32):
        messages.append({"body": message.content, "id": message.id})
        handler(engine, transport, message.content.encode(), message.id)
        client.delete_message(message)

service.plan_and_enqueue(engine, transport)
pump(settings.requests_queue, service.handle_archiver_message)
pump(settings.confirmations_queue, service.handle_confirmation)
pump(settings.requests_queue, service.handle_archiver_message)  # re-sends, if any
service.handle_archiver_message(engine, transport, b'{"type": "tsarchive.archive-request", "version": 1}', "bad-1")
from datetime import datetime, timezone
restore_range(engine, "public.events", None, datetime(2100, 1, 1, tzinfo=timezone.utc))
engine.status()
reader.collect()
points = reader.get_metrics_data().to_json()
print(json.dumps({"spans": [s.to_json() for s in spans.get_finished_spans()], "metrics": points,
                  "messages": messages, "settings": repr(settings)}))
"""


@pytest.mark.scenario(
    'A whole cycle with a password in the database URL and account keys in the connection strings: '
    'absent from logs, CLI output, spans, metrics and messages')
def test_no_secret_in_logs_output_telemetry_or_messages(monkeypatch, pg_dsn, tmp_path, azurite_container):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
    dsn = pg_dsn.replace("postgres@", f"postgres:{PASSWORD}@")  # the test cluster trusts local logins: any password
    names = queue_names(monkeypatch)
    env = cli_env(dsn, f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/lake",
                  ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING, ArchiverQueueStorage=AZURITE_CONNECTION_STRING,
                  ARCHIVER_TRANSPORT="storagequeue", ARCHIVER_PARTITIONED_TABLES="public.events", **names)
    inproc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=ROOT)
    assert inproc.returncode == 0, inproc.stderr[-3000:]
    captured = json.loads(inproc.stdout)
    assert captured["spans"] and captured["messages"] and "tsarchive.chunks.archived" in captured["metrics"]
    assert "DEBUG" in inproc.stderr and "archived" in inproc.stderr  # the logs were really captured
    cli = [subprocess.run([TSARCHIVE, "--verbose", *args], env=env, capture_output=True, text=True)
           for args in (["status", "--json"], ["jobs", "--json"], ["plan"], ["verify", "--deep", "--json"])]
    assert all(r.returncode == 0 for r in cli), [r.stderr for r in cli]
    bad = subprocess.run([TSARCHIVE, "plan"], env={**env, "ARCHIVER_DATABASE_URL": dsn.replace("55432", "1")},
                         capture_output=True, text=True)
    assert bad.returncode == 1
    leftovers = drain(AZURITE_CONNECTION_STRING, names["ARCHIVER_POISON_QUEUE"])
    everything = "\n".join([inproc.stdout, inproc.stderr, *(r.stdout + r.stderr for r in [*cli, bad]),
                            *(m.get_body().decode() for m in leftovers)])
    for secret in (PASSWORD, AZURITE_KEY, AZURITE_KEY[:20]):
        assert secret not in everything
