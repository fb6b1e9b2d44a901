"""OpenTelemetry: spans, metrics and trace-context propagation; exported to Azure Monitor when configured.

Without APPLICATIONINSIGHTS_CONNECTION_STRING everything still runs, with the API's no-op providers.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("tsarchive")
_lock = threading.Lock()
_configured = False
_backlog: dict[str, int] = {}
_propagator = TraceContextTextMapPropagator()


def worker_exports() -> bool:
    """True inside a Functions worker told to export itself (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY): it has
    called configure_azure_monitor and links each invocation to the host's trace; a second exporter here would send
    every record twice."""
    return os.environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "").strip().lower() in ("true", "1")


def configure() -> bool:
    """Send traces, metrics and logs to Application Insights when a connection string is set and nobody else does
    (the CLI, or a worker without PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY); idempotent."""
    global _configured
    with _lock:
        if _configured or worker_exports() or not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            return _configured
        from azure.monitor.opentelemetry import configure_azure_monitor

        kwargs: dict[str, Any] = {"logger_name": "tsarchive"}
        if "AAD" in os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""):
            # Local auth is disabled on the resource: authenticate with the managed identity.
            from azure.identity import ManagedIdentityCredential

            client_id = os.environ.get("AZURE_CLIENT_ID")
            kwargs["credential"] = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
        try:
            configure_azure_monitor(**kwargs)
            _configured = True
        except Exception as error:  # noqa: BLE001 - telemetry must never stop archiving
            log.warning("Application Insights exporter not configured: %s", error)
        return _configured


tracer = trace.get_tracer("tsarchive")
_meter = metrics.get_meter("tsarchive")
chunks_archived = _meter.create_counter("tsarchive.chunks.archived", unit="{chunk}", description="Chunks archived")
chunks_dropped = _meter.create_counter("tsarchive.chunks.dropped", unit="{chunk}", description="Chunks dropped")
chunks_failed = _meter.create_counter("tsarchive.chunks.failed", unit="{chunk}", description="Failed archive/drop steps")
rows_archived = _meter.create_counter("tsarchive.rows.archived", unit="{row}", description="Rows written to the lake")
drill_checked = _meter.create_counter("tsarchive.drill.checked", unit="{archive}",
                                      description="Archives read back by recovery drills")
drill_failed = _meter.create_counter("tsarchive.drill.failed", unit="{archive}",
                                     description="Archives a recovery drill found wrong")
bytes_archived = _meter.create_counter("tsarchive.bytes.archived", unit="By", description="Parquet bytes written")
step_duration = _meter.create_histogram("tsarchive.step.duration", unit="s", description="Duration of archive/drop steps")
drop_lag = _meter.create_histogram("tsarchive.drop.lag", unit="s",
                                   description="From a chunk's archive to its drop: how long archived rows stay twice")


_oldest_due: dict[str, float] = {}


def set_backlog(table: str, due_not_archived: int, oldest_due_seconds: float = 0.0) -> None:
    """Chunks due and not yet archived, and how long the oldest of them has been past its table's cutoff."""
    _backlog[table] = due_not_archived
    _oldest_due[table] = oldest_due_seconds


def _observe_oldest_due(_options: Any) -> Iterator[metrics.Observation]:
    for table, value in list(_oldest_due.items()):
        yield metrics.Observation(value, {"table": table})


def _observe_backlog(_options: Any) -> Iterator[metrics.Observation]:
    for table, value in list(_backlog.items()):
        yield metrics.Observation(value, {"table": table})


_meter.create_observable_gauge("tsarchive.backlog", callbacks=[_observe_backlog], unit="{chunk}",
                               description="Chunks due but not yet archived")
_meter.create_observable_gauge("tsarchive.oldest_due.age", callbacks=[_observe_oldest_due], unit="s",
                               description="Age of the oldest chunk due and not yet archived, from its range end")


# The trace a message carried, when the invocation already has a parent (the worker's): linked, not adopted.
_message_link: contextvars.ContextVar[trace.SpanContext | None] = contextvars.ContextVar("tsarchive_link", default=None)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span named tsarchive.<name>; exceptions are recorded on it."""
    clean = {k: v for k, v in attributes.items() if v is not None}
    linked = _message_link.get()
    links = [trace.Link(linked)] if linked is not None else None
    with tracer.start_as_current_span(f"tsarchive.{name}", attributes=clean, links=links) as current:
        yield current


def inject() -> str | None:
    """The current W3C traceparent, to carry in a message."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Continue the trace a message carried. Inside an invocation the worker already parented on the host's trigger
    span (which, for Service Bus, read the same traceparent from Diagnostic-Id), the message's trace becomes a link
    of the next span instead, so the invocation's tree stays whole."""
    if not traceparent:
        yield
        return
    carried = _propagator.extract({"traceparent": traceparent})
    if trace.get_current_span().get_span_context().is_valid:
        message = trace.get_current_span(carried).get_span_context()
        token = _message_link.set(message if message.is_valid else None)
        try:
            yield
        finally:
            _message_link.reset(token)
        return
    attached = otel_context.attach(carried)
    try:
        yield
    finally:
        otel_context.detach(attached)
