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
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .errors import ConfigError
from .messages import CONTENT_TYPE, ArchiveConfirmation, ArchiveRequest, RestoreRequest
from .settings import Settings

log = logging.getLogger("tsarchive")

SERVICEBUS_CONNECTION = "ServiceBusConnection"
QUEUE_STORAGE_CONNECTION = "ArchiverQueueStorage"


class Transport(Protocol):
    def send_request(self, request: ArchiveRequest, delay: timedelta | None = None) -> None: ...
    def send_confirmation(self, confirmation: ArchiveConfirmation) -> None: ...
    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None: ...
    def send_restore(self, request: RestoreRequest) -> None: ...


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
    """Sends with azure-servicebus; deterministic MessageId per job attempt enables duplicate detection."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None, client: Any = None) -> None:
        self.settings = settings
        self._env = env if env is not None else os.environ
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from azure.servicebus import ServiceBusClient

            conn = self._env.get(SERVICEBUS_CONNECTION)
            namespace = self._env.get(f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace")
            if conn:
                self._client = ServiceBusClient.from_connection_string(conn)
            elif namespace:
                self._client = ServiceBusClient(namespace, _credential(self._env, SERVICEBUS_CONNECTION))
            else:
                raise ConfigError(
                    f"ARCHIVER_TRANSPORT=servicebus needs {SERVICEBUS_CONNECTION}__fullyQualifiedNamespace "
                    f"(managed identity) or {SERVICEBUS_CONNECTION} (a connection string)."
                )
        return self._client

    def _message(self, body: str, message_id: str, properties: dict[str, Any], delay: timedelta | None = None) -> Any:
        from azure.servicebus import ServiceBusMessage

        message = ServiceBusMessage(body, message_id=message_id, content_type=CONTENT_TYPE,
                                    application_properties=properties, subject=properties.get("tsarchive_type"))
        if delay:
            message.scheduled_enqueue_time_utc = datetime.now(UTC) + delay
        return message

    def _send(self, queue: str, message: Any) -> None:
        with self.client.get_queue_sender(queue_name=queue) as sender:
            sender.send_messages(message)

    def send_request(self, request: ArchiveRequest, delay: timedelta | None = None) -> None:
        self._send(self.settings.requests_queue,
                   self._message(request.to_json(), request.message_id, _application_properties(request), delay))

    def send_confirmation(self, confirmation: ArchiveConfirmation) -> None:
        self._send(self.settings.confirmations_queue,
                   self._message(confirmation.to_json(), confirmation.message_id, _application_properties(confirmation)))

    def send_restore(self, request: RestoreRequest) -> None:
        """On the requests queue: the archiver function runs restores (they need the same rights and network)."""
        props: dict[str, Any] = {"tsarchive_type": request.type, "tsarchive_version": request.version,
                                 "restore_id": request.restore_id, "table": request.table}
        if request.traceparent:
            props["traceparent"] = props["Diagnostic-Id"] = request.traceparent
        self._send(self.settings.requests_queue, self._message(request.to_json(), request.message_id, props))

    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None:
        props = {"reason": reason[:1000], "source_queue": source_queue, "original_message_id": message_id or ""}
        self._send(self.settings.poison_queue,
                   self._message(body.decode("utf-8", "replace"), f"poison-{message_id or 'unknown'}", props))


class StorageQueueTransport:
    """Sends with azure-storage-queue, base64-encoded as the Functions queue trigger expects."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = env if env is not None else os.environ
        self._clients: dict[str, Any] = {}

    def _queue(self, name: str) -> Any:
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
        self._queue(self.settings.requests_queue).send_message(
            request.to_json(), visibility_timeout=int(delay.total_seconds()) if delay else None)

    def send_confirmation(self, confirmation: ArchiveConfirmation) -> None:
        self._queue(self.settings.confirmations_queue).send_message(confirmation.to_json())

    def send_restore(self, request: RestoreRequest) -> None:
        self._queue(self.settings.requests_queue).send_message(request.to_json())

    def send_poison(self, source_queue: str, body: bytes, reason: str, message_id: str | None) -> None:
        envelope = {"reason": reason, "source_queue": source_queue, "original_message_id": message_id,
                    "body_base64": base64.b64encode(body).decode()}
        self._queue(self.settings.poison_queue).send_message(json.dumps(envelope))


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "servicebus":
        return ServiceBusTransport(settings)
    return StorageQueueTransport(settings)
