"""Process-wide wiring for the function app: settings, engine and transport from app settings."""

from __future__ import annotations

import logging
import os

from . import telemetry
from .engine import Engine
from .settings import Settings, load_settings
from .transport import Transport, make_transport

log = logging.getLogger("tsarchive")
_transport: Transport | None = None
_transport_key: tuple | None = None


def settings() -> Settings:
    return load_settings()


def engine(current: Settings | None = None) -> Engine:
    telemetry.configure()
    return Engine(current or settings())


def transport(current: Settings | None = None) -> Transport:
    """One transport per process (its SDK clients hold connections); rebuilt if the settings change."""
    global _transport, _transport_key
    current = current or settings()
    key = (current.transport, current.requests_queue, current.confirmations_queue, current.poison_queue,
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("ServiceBusConnection", "ArchiverQueueStorage")))))
    if _transport is None or key != _transport_key:
        _transport, _transport_key = make_transport(current), key
    return _transport
