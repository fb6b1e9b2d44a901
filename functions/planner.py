"""Timer: plan, record jobs, enqueue one archive request per due chunk."""

import logging

import azure.functions as func

from shared_code import runtime
from shared_code.service import plan_and_enqueue

bp = func.Blueprint()
log = logging.getLogger("tsarchive")


@bp.function_name("planner")
@bp.timer_trigger(arg_name="timer", schedule="%ARCHIVER_SCHEDULE%", run_on_startup=False, use_monitor=True)
def planner(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("planner run is past due; running now (missed runs are not replayed)")
    settings = runtime.settings()
    with runtime.engine(settings) as engine:
        result = plan_and_enqueue(engine, runtime.transport(settings), dry_run=settings.dry_run)
    log.info("planner: %d due or blocked, %d enqueued, %d in flight", len(result.planned), len(result.enqueued),
             result.skipped_in_flight)
