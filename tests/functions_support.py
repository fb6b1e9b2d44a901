"""Driving the function app without the Functions host: real azure.functions objects, real Azurite queues."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

ROOT = Path(__file__).resolve().parent.parent


def load_app(monkeypatch, transport: str):
    """Import function_app as the host would, for one transport; returns {name: function object}."""
    monkeypatch.setenv("ARCHIVER_TRANSPORT", transport)
    monkeypatch.syspath_prepend(str(ROOT))
    for name in ["functions.bindings", "functions.planner", "functions.archiver", "functions.dropper",
                 "functions.http_api", "functions.drill", "function_app"]:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)
    app = sys.modules["function_app"].app
    return {f.get_function_name(): f for f in app.get_functions()}


def user_function(functions, name):
    return functions[name].build().get_user_function() if hasattr(functions[name], "build") else \
        functions[name].get_user_function()


def queue_names(monkeypatch) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"ARCHIVER_REQUESTS_QUEUE": f"req-{suffix}", "ARCHIVER_CONFIRMATIONS_QUEUE": f"conf-{suffix}",
             "ARCHIVER_POISON_QUEUE": f"poison-{suffix}"}
    for key, value in names.items():
        monkeypatch.setenv(key, value)
    return names


def drain(connection_string: str, queue: str, visibility: int = 300) -> list[func.QueueMessage]:
    """Receive everything visible on an Azurite queue as the Functions host would hand it over."""
    client = QueueClient.from_connection_string(connection_string, queue, message_decode_policy=TextBase64DecodePolicy())
    try:
        received = list(client.receive_messages(messages_per_page=32, visibility_timeout=visibility))
    except Exception:  # noqa: BLE001 - a queue nobody sent to yet does not exist
        return []
    out = []
    for message in received:
        out.append(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count,
                                     pop_receipt=message.pop_receipt))
        client.delete_message(message)
    return out


def peek_count(connection_string: str, queue: str) -> int:
    client = QueueClient.from_connection_string(connection_string, queue)
    try:
        return client.get_queue_properties().approximate_message_count
    except Exception:  # noqa: BLE001
        return 0


def json_body(response: func.HttpResponse) -> dict:
    return json.loads(response.get_body())
