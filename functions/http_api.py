"""HTTP routes: manual archival, restore, status, events, metrics, retry, drill, health. JSON in, JSON out."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

import azure.functions as func
import psycopg

from shared_code import api, runtime
from shared_code.errors import ArchiverError, ConfigError, DatabaseUnavailableError, LakeError, render_error

bp = func.Blueprint()
log = logging.getLogger("tsarchive")


def _json(status: int, body: object) -> func.HttpResponse:
    text = json.dumps(body, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    return func.HttpResponse(text, status_code=status, mimetype="application/json")


def _body(req: func.HttpRequest) -> bytes:
    """The request body, refused (413) past api.MAX_BODY_BYTES: every route takes a few small fields."""
    body = req.get_body() or b""
    if len(body) > api.MAX_BODY_BYTES:
        raise api.TooLarge(f"request body is {len(body)} bytes; at most {api.MAX_BODY_BYTES} are accepted")
    return body


def _handle(action: Callable[[], api.ApiResponse]) -> func.HttpResponse:
    """Map results and errors to JSON; user mistakes are 4xx, unreachable dependencies 503, never a bare 500."""
    try:
        result = action()
    except api.TooLarge as large:
        return _json(413, {"error": str(large)})
    except api.BadRequest as bad:
        return _json(400, {"error": str(bad)})
    except (ConfigError, LakeError, DatabaseUnavailableError) as down:
        log.error("service unavailable: %s", down)
        return _json(503, {"error": str(down)})
    except psycopg.OperationalError as down:
        log.error("database unavailable: %s", down)
        return _json(503, {"error": f"database unavailable: {render_error(down)}"})
    except ArchiverError as failure:
        return _json(409, {"error": render_error(failure)})
    except Exception as failure:  # noqa: BLE001 - a bug: logged with its trace, answered as JSON without internals
        log.exception("unexpected error in an HTTP route")
        return _json(500, {"error": f"internal error ({type(failure).__name__}); see the function's logs"})
    return _json(result.status, result.body)


def _with_engine(req: func.HttpRequest, work: Callable) -> Callable[[], api.ApiResponse]:
    """Read and bound the body first (413 costs no connection), then run `work(engine, settings, body)`."""

    def run() -> api.ApiResponse:
        body = _body(req)
        settings = runtime.settings()
        with runtime.engine(settings) as engine:
            return work(engine, settings, body)

    return run


@bp.function_name("trigger_archival")
@bp.route(route="retention/trigger-archival", methods=["POST"])
def trigger_archival(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.trigger_archival(e, runtime.transport(s), body)))


@bp.function_name("verify_archives")
@bp.route(route="archival/verify", methods=["POST"])
def verify_archives(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.run_drill(e, runtime.transport(s), body)))


@bp.function_name("drill_status")
@bp.route(route="archival/drills/{id}", methods=["GET"])
def drill_status(req: func.HttpRequest) -> func.HttpResponse:
    drill_id = req.route_params.get("id", "")
    return _handle(_with_engine(req, lambda e, s, body: api.drill_status(e, drill_id)))


@bp.function_name("restore_archive")
@bp.route(route="archival/restore", methods=["POST"])
def restore_archive(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.start_restore(e, runtime.transport(s), body)))


@bp.function_name("rehydrate_archive")
@bp.route(route="archival/rehydrate", methods=["POST"])
def rehydrate_archive(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.rehydrate(e, body)))


@bp.function_name("restore_list")
@bp.route(route="archival/restores", methods=["GET"])
def restore_list(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.restores(e, dict(req.params))))


@bp.function_name("restore_status")
@bp.route(route="archival/restores/{id}", methods=["GET"])
def restore_status(req: func.HttpRequest) -> func.HttpResponse:
    restore_id = req.route_params.get("id", "")
    return _handle(_with_engine(req, lambda e, s, body: api.restore_status(e, restore_id)))


@bp.function_name("retention_status")
@bp.route(route="retention/status", methods=["GET"])
def retention_status(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.retention_status(e)))


@bp.function_name("archival_status")
@bp.route(route="archival/status", methods=["GET"])
def archival_status(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.archival_status(e)))


@bp.function_name("archival_events")
@bp.route(route="archival/events", methods=["GET"])
def archival_events(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.archival_events(e, dict(req.params))))


@bp.function_name("archival_metrics")
@bp.route(route="archival/metrics", methods=["GET"])
def archival_metrics(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(_with_engine(req, lambda e, s, body: api.archival_metrics(e)))


@bp.function_name("retry_job")
@bp.route(route="archival/jobs/{id}/retry", methods=["POST"])
def retry_job(req: func.HttpRequest) -> func.HttpResponse:
    job_id = req.route_params.get("id", "")
    return _handle(_with_engine(req, lambda e, s, body: api.retry(e, runtime.transport(s), job_id)))


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness, for anyone: the worker answers. It opens no connection and names no dependency, so an anonymous
    caller can neither make the app connect at will nor read internal errors; readiness is /api/health/ready."""
    return _json(200, api.liveness())


@bp.function_name("readiness")
@bp.route(route="health/ready", methods=["GET"])
def readiness(req: func.HttpRequest) -> func.HttpResponse:
    """Readiness, with a function key: the database and the lake answer; the 503 body says which part is down."""

    def check() -> api.ApiResponse:
        _body(req)
        settings = runtime.settings()

        def database() -> None:
            with runtime.engine(settings) as engine:
                engine.conn.execute("SELECT 1")

        def lake() -> None:
            from shared_code.storage.lake import Lake

            secret = settings.lake_connection_string
            Lake(settings.lake_url, secret.get_secret_value() if secret else None, settings.lake_client_id).check()

        return api.health(database, lake)

    return _handle(check)
