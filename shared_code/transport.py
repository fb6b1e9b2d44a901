"""Message transports: Service Bus (production) and Storage queues (local with Azurite, or cheaper in Azure).

Both send through the Azure SDKs with identity-based connections by default; the Functions host receives.
Connection settings follow the Functions conventions, so the triggers and the senders share them:
  Service Bus:    ServiceBusConnection__fullyQualifiedNamespace (+ __clientId), or ServiceBusConnection (string)
  Storage queues: ArchiverQueueStorage__queueServiceUri (+ __clientId), or ArchiverQueueStorage (string)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .errors import ConfigError
from .messages import CONTENT_TYPE, ArchiveConfirmation, ArchiveRequest, DrillRequest, RestoreRequest
from .settings import Settings

log = logging.getLogger("tsarchive")

SERVICEBUS_CONNECTION = "ServiceBusConnection"
QUEUE_STORAGE_CONNECTION = "ArchiverQueueStorage"


class Transport(Protocol):
    def send_request(self, request: ArchiveRequest, delay: timedelta | None = None) -> None: ...
    def send_requests(self, requests: Sequence[ArchiveRequest]) -> None: ...
    def send_confirmation(self, confirmation: ArchiveConfirmation, delay: timedelta | None = None) -> None: ...
    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None: ...
    def send_restore(self, request: RestoreRequest, delay: timedelta | None = None) -> None: ...
    def send_drill(self, request: DrillRequest, delay: timedelta | None = None) -> None: ...


# Messages per Service Bus send: ~1 KiB each, well under the Standard tier's 256 KiB batch.
SEND_BATCH = 100


def _application_properties(message: ArchiveRequest | ArchiveConfirmation) -> dict[str, Any]:
    props: dict[str, Any] = {"tsarchive_type": message.type, "tsarchive_version": message.version,
                             "job_id": message.job_id, "table": message.table, "chunk": message.chunk}
    if message.traceparent:
        props["traceparent"] = message.traceparent
        props["Diagnostic-Id"] = message.traceparent  # what the Functions host reads to link the trigger span
    return props


def _credential(env: Mapping[str, str], prefix: str):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = env.get(f"{prefix}__clientId")
    if env.get(f"{prefix}__credential") == "managedidentity" or client_id:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential()


class ServiceBusTransport:
    """Sends with azure-servicebus; deterministic MessageId per job attempt enables duplicate detection.

    The SDK's clients and senders are not thread-safe (azure-servicebus README, "Thread safety"), and the Functions
    worker runs concurrent invocations on a thread pool: each thread gets its own ServiceBusClient and senders.
    """

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None,
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self._env = env if env is not None else os.environ
        self._factory = client_factory or self._new_client
        self._local = threading.local()

    def _new_client(self) -> Any:
        from azure.servicebus import ServiceBusClient

        conn = self._env.get(SERVICEBUS_CONNECTION)
        namespace = self._env.get(f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace")
        if conn:
            return ServiceBusClient.from_connection_string(conn)
        if namespace:
            return ServiceBusClient(namespace, _credential(self._env, SERVICEBUS_CONNECTION))
        raise ConfigError(
            f"ARCHIVER_TRANSPORT=servicebus needs {SERVICEBUS_CONNECTION}__fullyQualifiedNamespace "
            f"(managed identity) or {SERVICEBUS_CONNECTION} (a connection string)."
        )

    @property
    def client(self) -> Any:
        """This thread's client, made on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
        return client

    def _message(self, body: str, message_id: str, properties: dict[str, Any], delay: timedelta | None = None) -> Any:
        from azure.servicebus import ServiceBusMessage

        message = ServiceBusMessage(body, message_id=message_id, content_type=CONTENT_TYPE,
                                    application_properties=properties, subject=properties.get("tsarchive_type"))
        if delay:
            message.scheduled_enqueue_time_utc = datetime.now(UTC) + delay
        return message

    def _send(self, queue: str, messages: list[Any]) -> None:
        """One sender link for all of them, in batches of SEND_BATCH messages per transfer."""
        with self.client.get_queue_sender(queue_name=queue) as sender:
            for start in range(0, len(messages), SEND_BATCH):
                sender.send_messages(messages[start:start + SEND_BATCH])

    def _request_message(self, request: ArchiveRequest, delay: timedelta | None = None) -> Any:
        return self._message(request.to_json(), request.message_id, _application_properties(request), delay)

    def send_request(self, request: ArchiveRequest, delay: timedelta | None = None) -> None:
        self._send(self.settings.requests_queue, [self._request_message(request, delay)])

    def send_requests(self, requests: Sequence[ArchiveRequest]) -> None:
        if requests:
            self._send(self.settings.requests_queue, [self._request_message(r) for r in requests])

    def send_confirmation(self, confirmation: ArchiveConfirmation, delay: timedelta | None = None) -> None:
        self._send(self.settings.confirmations_queue, [self._message(
            confirmation.to_json(), confirmation.message_id, _application_properties(confirmation), delay)])

    def send_restore(self, request: RestoreRequest, delay: timedelta | None = None) -> None:
        """On the requests queue: the archiver function runs restores (they need the same rights and network)."""
        self._send_work(request, {"restore_id": request.restore_id, "table": request.table}, delay)

    def send_drill(self, request: DrillRequest, delay: timedelta | None = None) -> None:
        """On the requests queue: the archiver function runs queued drills (reading back archives is long work)."""
        self._send_work(request, {"drill_id": request.drill_id, "table": request.table or ""}, delay)

    def _send_work(self, request: RestoreRequest | DrillRequest, ids: dict[str, Any], delay: timedelta | None) -> None:
        props: dict[str, Any] = {"tsarchive_type": request.type, "tsarchive_version": request.version, **ids}
        if request.traceparent:
            props["traceparent"] = props["Diagnostic-Id"] = request.traceparent
        self._send(self.settings.requests_queue, [self._message(request.to_json(), request.message_id, props, delay)])

    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None:
        props = {"reason": reason[:1000], "source_queue": source_queue, "original_message_id": message_id or ""}
        self._send(self.settings.poison_queue,
                   [self._message(body.decode("utf-8", "replace"), f"poison-{message_id or 'unknown'}", props)])


def _seconds(delay: timedelta | None) -> int | None:
    """A Storage queue message's initial invisibility: the delay (the service caps it at seven days)."""
    return min(int(delay.total_seconds()), 7 * 24 * 3600) if delay else None


class StorageQueueTransport:
    """Sends with azure-storage-queue, base64-encoded as the Functions queue trigger expects. Azure SDK clients
    built on azure-core are safe to share across threads, so one QueueClient per queue serves the process."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = env if env is not None else os.environ
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _queue(self, name: str) -> Any:
        with self._lock:
            return self._clients[name] if name in self._clients else self._open(name)

    def _open(self, name: str) -> Any:
        if name not in self._clients:
            from azure.core.exceptions import ResourceExistsError
            from azure.storage.queue import QueueClient, TextBase64EncodePolicy

            conn = self._env.get(QUEUE_STORAGE_CONNECTION)
            uri = self._env.get(f"{QUEUE_STORAGE_CONNECTION}__queueServiceUri")
            policy = TextBase64EncodePolicy()
            if conn:
                if conn.strip() == "UseDevelopmentStorage=true":
                    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDX"
                            "J1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")
                client = QueueClient.from_connection_string(conn, name, message_encode_policy=policy)
            elif uri:
                client = QueueClient(uri, name, credential=_credential(self._env, QUEUE_STORAGE_CONNECTION),
                                     message_encode_policy=policy)
            else:
                raise ConfigError(
                    f"ARCHIVER_TRANSPORT=storagequeue needs {QUEUE_STORAGE_CONNECTION} (a connection string, e.g. "
                    f"UseDevelopmentStorage=true) or {QUEUE_STORAGE_CONNECTION}__queueServiceUri (managed identity)."
                )
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            self._clients[name] = client
        return self._clients[name]

    def send_request(self, request: ArchiveRequest, delay: timedelta | None = None) -> None:
        self._queue(self.settings.requests_queue).send_message(request.to_json(), visibility_timeout=_seconds(delay))

    def send_requests(self, requests: Sequence[ArchiveRequest]) -> None:
        for request in requests:  # the queue service takes one message per call
            self.send_request(request)

    def send_confirmation(self, confirmation: ArchiveConfirmation, delay: timedelta | None = None) -> None:
        self._queue(self.settings.confirmations_queue).send_message(confirmation.to_json(),
                                                                    visibility_timeout=_seconds(delay))

    def send_restore(self, request: RestoreRequest, delay: timedelta | None = None) -> None:
        self._queue(self.settings.requests_queue).send_message(request.to_json(), visibility_timeout=_seconds(delay))

    def send_drill(self, request: DrillRequest, delay: timedelta | None = None) -> None:
        self._queue(self.settings.requests_queue).send_message(request.to_json(), visibility_timeout=_seconds(delay))

    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None:
        envelope = {"reason": reason, "source_queue": source_queue, "original_message_id": message_id,
                    "body_base64": base64.b64encode(body).decode()}
        self._queue(self.settings.poison_queue).send_message(json.dumps(envelope))


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "servicebus":
        return ServiceBusTransport(settings)
    return StorageQueueTransport(settings)
