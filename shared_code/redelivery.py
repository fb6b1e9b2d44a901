"""Queued work that hit a transient failure (database, lake or broker unreachable): re-send it later, end normally.

Raising instead would hand the message back to the broker, which redelivers it at once: Service Bus spends
maxDeliveryCount (5) in seconds and dead-letters work that a one-minute failover would have let through. A re-send
carries `redelivery` + 1 and arrives after an exponential delay (ARCHIVER_REDELIVERY_BACKOFF_SECONDS, doubling, at
most 15 minutes). Past ARCHIVER_REDELIVERY_LIMIT re-sends the failure is raised, so a long outage ends in dead letters
and the alert on them.
"""

from __future__ import annotations

from datetime import timedelta

from .messages import ArchiveConfirmation, ArchiveRequest, DrillRequest, MessageError, RestoreRequest, parse
from .settings import Settings
from .transport import Transport

MAX_DELAY_SECONDS = 900


def delay_for(settings: Settings, redelivery: int) -> timedelta:
    """The wait before re-send number `redelivery` + 1."""
    return timedelta(seconds=min(MAX_DELAY_SECONDS, settings.redelivery_backoff_seconds * 2 ** min(redelivery, 20)))


def resend_later(settings: Settings, transport: Transport, body: bytes) -> tuple[str, timedelta] | None:
    """Re-send a message with a delay: its new message id and the delay, or None when it must not be re-sent (its
    budget is spent, or it is not one of ours: that is for the handler to poison once it can run)."""
    try:
        message = parse(body, (ArchiveRequest, ArchiveConfirmation, RestoreRequest, DrillRequest))
    except MessageError:
        return None
    if message.redelivery >= settings.redelivery_limit:
        return None
    delay = delay_for(settings, message.redelivery)
    again = message.model_copy(update={"redelivery": message.redelivery + 1})
    if isinstance(again, ArchiveRequest):
        transport.send_request(again, delay=delay)
    elif isinstance(again, ArchiveConfirmation):
        transport.send_confirmation(again, delay=delay)
    elif isinstance(again, DrillRequest):
        transport.send_drill(again, delay=delay)
    else:
        transport.send_restore(again, delay=delay)
    return again.message_id, delay
