"""Queue trigger on the requests queue: archive one chunk and send a confirmation, or run a queued restore."""

import logging

import azure.functions as func

from shared_code import runtime
from shared_code.service import handle_archiver_message, run_queued

from .bindings import message_parts, queue_trigger

bp = func.Blueprint()
log = logging.getLogger("tsarchive")


@bp.function_name("archiver")
@queue_trigger(bp, "ARCHIVER_REQUESTS_QUEUE")
def archiver(msg) -> None:
    body, message_id, delivery = message_parts(msg)
    settings = runtime.settings()
    outcome = run_queued(settings, runtime.transport(settings), settings.requests_queue, body, message_id,
                         handle_archiver_message, runtime.engine)
    log.info("archiver: message %s (delivery %d): %s", message_id, delivery, outcome)
