"""Queue trigger on confirmations: verify and drop archived chunks; retry failed ones with backoff."""

import logging

import azure.functions as func

from shared_code import runtime
from shared_code.service import handle_confirmation, run_queued

from .bindings import message_parts, queue_trigger

bp = func.Blueprint()
log = logging.getLogger("tsarchive")


@bp.function_name("dropper")
@queue_trigger(bp, "ARCHIVER_CONFIRMATIONS_QUEUE")
def dropper(msg) -> None:
    body, message_id, delivery = message_parts(msg)
    settings = runtime.settings()
    outcome = run_queued(settings, runtime.transport(settings), settings.confirmations_queue, body, message_id,
                         handle_confirmation, runtime.engine)
    log.info("dropper: message %s (delivery %d): %s", message_id, delivery, outcome)
