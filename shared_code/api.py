"""HTTP API handlers, free of azure.functions: parse and validate input, call the engine, return status + JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .engine import Engine
from .errors import ArchiverError, JobStateError, render_error
from .ledger.jobs import JobState
from .service import plan_and_enqueue, request_drill, request_restore, retry_job
from .transport import Transport

MAX_PAGE = 500
MAX_DRILL_SAMPLE = 1000
# Requests one trigger-archival call sends: an HTTP answer must come within 230 s whatever functionTimeout says, and
# a Storage queue takes one call per message. The rest stay due: call again, or the planner sends them.
HTTP_ENQUEUE_LIMIT = 1000


@dataclass
class ApiResponse:
    status: int
    body: Any


class BadRequest(Exception):
    """Input the caller must fix; answered with 400 and the message."""


class TooLarge(BadRequest):
    """A request body past MAX_BODY_BYTES; answered with 413."""


MAX_BODY_BYTES = 64 * 1024


def error(status: int, message: str, **extra: Any) -> ApiResponse:
    return ApiResponse(status, {"error": message, **extra})


def _json_object(body: bytes) -> dict[str, Any]:
    if not body or not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body must be JSON, e.g. {\"hypertable\": \"public.metrics\", \"dry_run\": true}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise BadRequest(f"{name} must be true or false")


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be an ISO 8601 timestamp string, e.g. 2024-01-01T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} {value!r} is not an ISO 8601 timestamp, e.g. 2024-01-01T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer between {low} and {high}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def trigger_archival(engine: Engine, transport: Transport, body: bytes) -> ApiResponse:
    """POST /api/retention/trigger-archival {hypertable?, older_than?, dry_run?} -> 202 with the planned jobs."""
    data = _json_object(body)
    unknown = sorted(set(data) - {"hypertable", "older_than", "dry_run"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: hypertable, older_than, dry_run")
    hypertable = data.get("hypertable")
    if hypertable is not None and (not isinstance(hypertable, str) or not hypertable.strip()):
        raise BadRequest("hypertable must be a non-empty string such as public.metrics")
    older_than = _timestamp(data["older_than"], "older_than") if data.get("older_than") is not None else None
    if older_than and older_than > datetime.now(UTC):
        raise BadRequest("older_than must be in the past")
    dry_run = _bool(data.get("dry_run", False), "dry_run")
    if hypertable:
        tables = {(e.chunk.table, e.chunk.table_name) for e in engine.plan()}
        known = {t for pair in tables for t in pair}
        if hypertable not in known:
            return error(404, f"no archivable table named {hypertable!r}", known=sorted(t for t in known if "." in t))
    result = plan_and_enqueue(engine, transport, hypertable=hypertable, older_than=older_than, dry_run=dry_run,
                              reason="manual", limit=HTTP_ENQUEUE_LIMIT)
    return ApiResponse(202 if not dry_run else 200, result.as_dict())


def retention_status(engine: Engine) -> ApiResponse:
    return ApiResponse(200, {"retention_days": engine.settings.retention_days, "tables": engine.status()})


def archival_status(engine: Engine) -> ApiResponse:
    engine.init()
    rows = engine.ledger.state_counts()
    states = {str(s): 0 for s in JobState}
    last = None
    for state, count, _, _, updated in rows:
        states[state] = count
        last = max(last, updated) if last and updated else (updated or last)
    return ApiResponse(200, {"jobs": states, "last_activity": last.isoformat() if last else None,
                             "last_drill": engine.ledger.last_drill(), "restores": engine.ledger.restore_counts()})


_RESTORE_FIELDS = {"hypertable", "from", "to", "into", "dry_run", "allow_duplicates", "skip_present"}


def _name(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or value.count(".") < 1 or not all(value.split(".", 1)) or len(value) > 300:
        raise BadRequest(f"{field_name} must be a schema-qualified table name such as public.metrics")
    return value


def start_restore(engine: Engine, transport: Transport, raw: bytes) -> ApiResponse:
    """POST /archival/restore: queue a restore of a table's archived rows in [from, to); dry_run answers at once."""
    from .restore import parse_bound, restore_estimate

    data = _json_object(raw)
    unknown = sorted(set(data) - _RESTORE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_RESTORE_FIELDS))}")
    table = _name(data.get("hypertable"), "hypertable")
    into = _name(data["into"], "into") if data.get("into") is not None else None
    bounds = {}
    for key in ("from", "to"):
        value = data.get(key)
        if value is not None and not isinstance(value, str | int) or isinstance(value, bool):
            raise BadRequest(f"{key} must be an ISO 8601 timestamp string (or an integer for integer time columns)")
        try:
            bounds[key] = parse_bound(None if value is None else str(value), key)
        except ArchiverError as bad:
            raise BadRequest(str(bad)) from None
    if bounds["from"] is None and bounds["to"] is None:
        raise BadRequest("give from and/or to: the time range to restore")
    flags = {k: _bool(data.get(k, False), k) for k in ("dry_run", "allow_duplicates", "skip_present")}
    engine.init()
    if not engine.ledger.restorable(table):
        return error(404, f"nothing of {table!r} is archived")
    if flags["dry_run"]:  # the ledger only: reading the files could outlast the 230 s an HTTP answer may take
        try:
            return ApiResponse(200, restore_estimate(engine, table, bounds["from"], bounds["to"]))
        except ArchiverError as nothing:
            return error(404, str(nothing))
    text = {k: None if data.get(k) is None else str(data[k]) for k in ("from", "to")}
    restore_id = request_restore(engine, transport, table=table, range_from=text["from"], range_to=text["to"],
                                 into=into, allow_duplicates=flags["allow_duplicates"],
                                 skip_present=flags["skip_present"], requested_by="http")
    return ApiResponse(202, {"restore_id": restore_id, "state": "queued",
                             "status": f"/api/archival/restores/{restore_id}"})


_REHYDRATE_FIELDS = {"hypertable", "from", "to", "priority", "tier"}


def rehydrate(engine: Engine, raw: bytes) -> ApiResponse:
    """POST /archival/rehydrate: start bringing a range's offline files back online; 202 while any is pending."""
    from .restore import parse_bound, rehydrate_range

    data = _json_object(raw)
    unknown = sorted(set(data) - _REHYDRATE_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_REHYDRATE_FIELDS))}")
    table = _name(data.get("hypertable"), "hypertable")
    bounds = {}
    for key in ("from", "to"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str | int) or isinstance(value, bool)):
            raise BadRequest(f"{key} must be an ISO 8601 timestamp string (or an integer for integer time columns)")
        try:
            bounds[key] = parse_bound(None if value is None else str(value), key)
        except ArchiverError as bad:
            raise BadRequest(str(bad)) from None
    priority, tier = str(data.get("priority", "standard")).lower(), str(data.get("tier", "hot")).lower()
    if priority not in ("standard", "high"):
        raise BadRequest("priority must be standard or high")
    if tier not in ("hot", "cool", "cold"):
        raise BadRequest("tier must be hot, cool or cold")
    engine.init()
    if not engine.ledger.restorable(table):
        return error(404, f"nothing of {table!r} is archived")
    try:
        report = rehydrate_range(engine, table, bounds["from"], bounds["to"], tier=tier.capitalize(),
                                 priority=priority.capitalize())
    except ArchiverError as nothing:
        return error(404, str(nothing))
    return ApiResponse(200 if report["ready"] else 202, report)


def restore_status(engine: Engine, restore_id: str) -> ApiResponse:
    try:
        number = int(restore_id)
    except ValueError:
        raise BadRequest(f"restore id must be an integer, got {restore_id!r}") from None
    engine.init()
    record = engine.ledger.restore_record(number)
    return ApiResponse(200, record) if record else error(404, f"restore {number} does not exist")


def restores(engine: Engine, params: dict[str, str]) -> ApiResponse:
    engine.init()
    limit = _int(params.get("limit"), "limit", 20, 1, MAX_PAGE)
    return ApiResponse(200, {"restores": engine.ledger.restore_records(limit=limit)})


def run_drill(engine: Engine, transport: Transport, raw: bytes) -> ApiResponse:
    """POST /archival/verify: queue the recovery drill on a sample ({"sample": N}, default ARCHIVER_DRILL_SAMPLE);
    202 with the drill's status URL. Reading back archives can outlast an HTTP answer's 230 s, so the archiver runs it."""
    body = _json_object(raw)
    unknown = sorted(set(body) - {"sample", "hypertable"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: hypertable, sample")
    sample = body.get("sample", engine.settings.drill_sample)
    if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= MAX_DRILL_SAMPLE:
        raise BadRequest(f"sample must be an integer between 1 and {MAX_DRILL_SAMPLE}")
    table = body.get("hypertable")
    if table is not None and (not isinstance(table, str) or not table.strip()):
        raise BadRequest("hypertable must be a non-empty string such as public.metrics")
    drill_id = request_drill(engine, transport, sample=sample, table=table, requested_by="http")
    return ApiResponse(202, {"drill_id": drill_id, "state": "queued", "status": f"/api/archival/drills/{drill_id}"})


def drill_status(engine: Engine, drill_id: str) -> ApiResponse:
    try:
        number = int(drill_id)
    except ValueError:
        raise BadRequest(f"drill id must be an integer, got {drill_id!r}") from None
    engine.init()
    record = engine.ledger.drill_record(number)
    return ApiResponse(200, record) if record else error(404, f"drill {number} does not exist")


def archival_events(engine: Engine, params: dict[str, str]) -> ApiResponse:
    states = [s for s in (params.get("state") or "").split(",") if s]
    valid = {str(s) for s in JobState}
    bad = [s for s in states if s not in valid]
    if bad:
        raise BadRequest(f"unknown state {', '.join(bad)}; use one of {', '.join(sorted(valid))}")
    limit = _int(params.get("limit"), "limit", 50, 1, MAX_PAGE)
    offset = _int(params.get("offset"), "offset", 0, 0, 10_000_000)
    engine.init()
    jobs = engine.ledger.jobs(states or None, table=params.get("table") or None, limit=limit + 1, offset=offset)
    page = [j.as_dict() for j in jobs[:limit]]
    return ApiResponse(200, {"events": page, "limit": limit, "offset": offset,
                             "next_offset": offset + limit if len(jobs) > limit else None})


def archival_metrics(engine: Engine) -> ApiResponse:
    engine.init()
    return ApiResponse(200, engine.ledger.metrics(engine.settings.max_attempts))


def retry(engine: Engine, transport: Transport, job_id: str) -> ApiResponse:
    try:
        number = int(job_id)
    except ValueError:
        raise BadRequest(f"job id must be an integer, got {job_id!r}") from None
    engine.init()
    job = engine.ledger.get(number)
    if job is None:
        return error(404, f"job {number} does not exist")
    if job.state != JobState.FAILED:
        return error(409, f"job {number} is {job.state}; only failed jobs can be retried", state=str(job.state))
    try:
        job = retry_job(engine, transport, number)
    except JobStateError as conflict:
        return error(409, str(conflict))
    return ApiResponse(202, {"job": job.as_dict(), "status": "requeued"})


def liveness() -> dict[str, str]:
    """What the anonymous health route says: the worker runs this build. Nothing else (no dependency, no error)."""
    from . import __version__

    return {"status": "alive", "version": __version__}


def health(check_database, check_lake) -> ApiResponse:
    """Each check is a callable that raises on failure; the answer says which part is down."""
    parts: dict[str, str] = {}
    for name, check in (("database", check_database), ("lake", check_lake)):
        try:
            check()
            parts[name] = "ok"
        except Exception as failure:  # noqa: BLE001 - reported, not raised
            parts[name] = f"error: {render_error(failure)}"
    healthy = all(v == "ok" for v in parts.values())
    return ApiResponse(200 if healthy else 503, {"status": "healthy" if healthy else "unhealthy", **parts})
