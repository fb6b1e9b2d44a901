"""Trigger decorators for the configured transport (ARCHIVER_TRANSPORT), read when the app is indexed."""

from __future__ import annotations

import os
from collections.abc import Callable

import azure.functions as func

from shared_code.transport import QUEUE_STORAGE_CONNECTION, SERVICEBUS_CONNECTION


def transport_name() -> str:
    return os.environ.get("ARCHIVER_TRANSPORT", "servicebus").strip().lower()


def queue_trigger(bp: func.Blueprint, queue_setting: str) -> Callable:
    """A Service Bus or Storage queue trigger on the queue named by the app setting `queue_setting`."""
    if transport_name() == "storagequeue":
        return bp.queue_trigger(arg_name="msg", queue_name=f"%{queue_setting}%", connection=QUEUE_STORAGE_CONNECTION)
    return bp.service_bus_queue_trigger(arg_name="msg", queue_name=f"%{queue_setting}%", connection=SERVICEBUS_CONNECTION)


def message_parts(msg: func.ServiceBusMessage | func.QueueMessage) -> tuple[bytes, str | None, int]:
    """Body, message id and delivery count, whichever transport delivered it."""
    body = msg.get_body()
    if isinstance(msg, func.QueueMessage):
        return body, msg.id, msg.dequeue_count or 1
    return body, msg.message_id, msg.delivery_count or 1
