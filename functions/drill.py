"""Timer: the recovery drill (verify --deep on a random sample of archives). Registered only when
ARCHIVER_DRILL_SCHEDULE is set."""

import logging

import azure.functions as func

from shared_code import runtime

bp = func.Blueprint()
log = logging.getLogger("tsarchive")


@bp.function_name("drill")
@bp.timer_trigger(arg_name="timer", schedule="%ARCHIVER_DRILL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def drill(timer: func.TimerRequest) -> None:
    settings = runtime.settings()
    with runtime.engine(settings) as engine:
        engine.init()
        results = engine.drill(settings.drill_sample)
    failed = [r for r in results if r.outcome == "failed"]
    offline = [r for r in results if r.outcome == "offline"]
    for result in failed:
        log.error("drill: job %s %s: %s", result.job_id, result.chunk, result.detail)
    log.info("drill: %d archive(s) read back, %d failed, %d skipped as offline (Archive tier)",
             len(results) - len(offline), len(failed), len(offline))
