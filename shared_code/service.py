"""What the function app does, without azure.functions: plan and enqueue, archive on request, drop on confirmation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import telemetry
from .archive.stage import retry_delay
from .engine import Engine
from .errors import ArchiverError, is_transient, render_error
from .ledger.jobs import Job, JobState
from .messages import (
    DRILL_TYPE,
    RESTORE_TYPE,
    ArchiveConfirmation,
    ArchiveRequest,
    DrillRequest,
    MessageError,
    RestoreRequest,
    parse,
)
from .planning import Decision
from .redelivery import resend_later
from .results import plan_entry_dict
from .settings import Settings
from .transport import SEND_BATCH, Transport

log = logging.getLogger("tsarchive")


@dataclass
class EnqueueResult:
    dry_run: bool
    planned: list[dict[str, Any]] = field(default_factory=list)
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    skipped_in_flight: int = 0
    remaining: int = 0  # due and sendable, left for another call or the next planner run (the limit was reached)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "planned": self.planned, "enqueued": self.enqueued,
                "skipped_in_flight": self.skipped_in_flight, "remaining": self.remaining}


def _request(job: Job, sequence: int, reason: str) -> ArchiveRequest:
    return ArchiveRequest(job_id=job.id, attempt=sequence, table=job.table, chunk=job.chunk.qualified_chunk,
                          requested_at=datetime.now(UTC), reason=reason, traceparent=telemetry.inject())


def plan_and_enqueue(engine: Engine, transport: Transport, *, hypertable: str | None = None,
                     older_than: datetime | None = None, dry_run: bool = False, reason: str = "scheduled",
                     limit: int | None = None) -> EnqueueResult:
    """Plan, record jobs, send one request per due chunk (at most `limit`); chunks already in flight are skipped."""
    with telemetry.span("planner", hypertable=hypertable, dry_run=dry_run, reason=reason):
        return _plan_and_enqueue(engine, transport, hypertable, older_than, dry_run, reason, limit)


def _plan_and_enqueue(engine: Engine, transport: Transport, hypertable: str | None, older_than: datetime | None,
                      dry_run: bool, reason: str, limit: int | None) -> EnqueueResult:
    entries = engine.plan(hypertable, older_than)
    due = [e for e in entries if e.decision in (Decision.DUE, Decision.BLOCKED)]
    result = EnqueueResult(dry_run=dry_run, planned=[plan_entry_dict(e) for e in due])
    if dry_run:
        return result
    recorded = engine.record_plan(entries)
    after = engine.settings.requeue_after_minutes * 60
    qualified = hypertable if hypertable and "." in hypertable else None
    candidates = engine.ledger.enqueueable(after, engine.settings.max_attempts, qualified)
    if hypertable and not qualified:
        candidates = [j for j in candidates if j.table_name == hypertable]
    if older_than is not None:
        candidates = [j for j in candidates if isinstance(j.range_end, datetime) and j.range_end <= older_than]
    due_ids = {j.id for j in recorded if j.state != JobState.BLOCKED}
    result.skipped_in_flight = len(due_ids - {j.id for j in candidates})
    if limit is not None and len(candidates) > limit:
        result.remaining = len(candidates) - limit
        candidates = candidates[:limit]
    for start in range(0, len(candidates), SEND_BATCH):
        batch: list[ArchiveRequest] = []
        for job in candidates[start:start + SEND_BATCH]:
            sequence = engine.ledger.mark_enqueued(job.id, after)
            if sequence is None:
                result.skipped_in_flight += 1
                continue
            request = _request(job, sequence, reason)
            batch.append(request)
            result.enqueued.append({"job_id": job.id, "chunk": request.chunk, "table": job.table,
                                    "message_id": request.message_id, "state": str(job.state)})
        # A crash between the ledger and the send leaves jobs marked sent: the planner re-sends them after
        # ARCHIVER_REQUEUE_AFTER_MINUTES, as for a lost message.
        transport.send_requests(batch)
    log.info("planner enqueued %d request(s)", len(result.enqueued))
    return result


def _poison(transport: Transport, queue: str, body: bytes, error: MessageError, message_id: str | None) -> str:
    reason = f"rejected message {message_id or '?'} from {queue}: {error}"
    log.error(reason)
    transport.send_poison(queue, body, str(error), message_id)
    return "poisoned"


def _receive(engine: Engine, transport: Transport, body: bytes, message_id: str | None, kind: type, queue: str):
    """The validated message and its job, or 'poisoned' after forwarding a bad message with the reason."""
    try:
        message = parse(body, kind)
    except MessageError as error:
        return _poison(transport, queue, body, error, message_id)
    job = engine.ledger.get(message.job_id)
    if job is None:
        return _poison(transport, queue, body, MessageError(f"job {message.job_id} is not in the ledger"), message_id)
    return message, job


def handle_request(engine: Engine, transport: Transport, body: bytes, message_id: str | None = None) -> str:
    """Archive the requested chunk and confirm the outcome. Duplicates re-confirm without re-archiving."""
    received = _receive(engine, transport, body, message_id, ArchiveRequest, engine.settings.requests_queue)
    if isinstance(received, str):
        return received
    request, job = received
    with telemetry.continued(request.traceparent), telemetry.span("handle_request", job_id=request.job_id):
        result = engine.archive(job.id)
        retired, job = job, engine.ledger.get(job.id)
        if job is None:  # a twin of a chunk another job archived and dropped: retired, nothing to confirm
            log.info("job %s: %s; no confirmation", retired.id, result.detail, extra={"job_id": retired.id})
            return "skipped"
        if result.outcome == "skipped" and job.state not in (JobState.ARCHIVED, JobState.DROPPED):
            log.info("job %s: %s; no confirmation", job.id, result.detail, extra={"job_id": job.id})
            return "skipped"
        status = "archived" if job.state in (JobState.ARCHIVED, JobState.DROPPED) else "failed"
        confirmation = ArchiveConfirmation(
            job_id=job.id, attempt=request.attempt, table=job.table, chunk=job.chunk.qualified_chunk, status=status,
            lake_paths=job.lake_paths, rows=job.row_count, checksums=job.checksums,
            error=None if status == "archived" else (job.last_error or result.detail), traceparent=telemetry.inject(),
        )
        transport.send_confirmation(confirmation)
        return status


def handle_archiver_message(engine: Engine, transport: Transport, body: bytes, message_id: str | None = None) -> str:
    """The requests queue carries archive requests, restore requests and drill requests."""
    try:
        kind = json.loads(body).get("type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        kind = None
    if kind == RESTORE_TYPE:
        return handle_restore(engine, transport, body, message_id)
    if kind == DRILL_TYPE:
        return handle_drill(engine, transport, body, message_id)
    return handle_request(engine, transport, body, message_id)


def request_restore(engine: Engine, transport: Transport, *, table: str, range_from: str | None, range_to: str | None,
                    into: str | None, allow_duplicates: bool, skip_present: bool, requested_by: str) -> int:
    """Record a restore as queued and send it to the archiver; its id (GET /api/archival/restores/{id})."""
    engine.init()
    options = {"allow_duplicates": allow_duplicates, "skip_present": skip_present}
    restore_id = engine.ledger.open_restore(table, range_from, range_to, into, options, requested_by, queued=True)
    request = RestoreRequest(restore_id=restore_id, table=table, range_from=range_from, range_to=range_to, into=into,
                             allow_duplicates=allow_duplicates, skip_present=skip_present,
                             requested_at=datetime.now(UTC), traceparent=telemetry.inject())
    try:
        transport.send_restore(request)
    except Exception as error:
        engine.ledger.fail_restore(restore_id, f"could not be queued: {render_error(error)}")
        raise
    return restore_id


def handle_restore(engine: Engine, transport: Transport, body: bytes, message_id: str | None = None) -> str:
    """Run a queued restore once; a redelivery after its worker died resumes it, skipping chunks already back."""
    from .restore import parse_bound, restore_range

    try:
        request = parse(body, RestoreRequest)
    except MessageError as error:
        return _poison(transport, engine.settings.requests_queue, body, error, message_id)
    engine.init()
    if engine.ledger.restore_record(request.restore_id) is None:
        return _poison(transport, engine.settings.requests_queue, body,
                       MessageError(f"restore {request.restore_id} is not in the ledger"), message_id)
    previous = engine.ledger.start_restore(request.restore_id)
    if previous is None:
        return "restore already finished"
    resumed = previous == "running"
    with telemetry.continued(request.traceparent), telemetry.span("restore", restore_id=request.restore_id):
        try:
            low, high = parse_bound(request.range_from, "from"), parse_bound(request.range_to, "to")
            result = restore_range(engine, request.table, low, high, into=request.into,
                                   allow_duplicates=request.allow_duplicates,
                                   skip_present=request.skip_present or resumed)
        except (ArchiverError, psycopg.Error) as error:
            if is_transient(error):
                raise  # re-sent with backoff (run_queued); the redelivery resumes it, skipping chunks already back
            engine.ledger.fail_restore(request.restore_id, render_error(error))
            log.error("restore %s failed: %s", request.restore_id, render_error(error))
            return "restore failed"
        engine.ledger.finish_restore(request.restore_id, result.rows, result.as_dict())
        log.info("restore %s: %s rows into %s", request.restore_id, result.rows, result.target)
        return "restored"


def request_drill(engine: Engine, transport: Transport, *, sample: int, table: str | None, requested_by: str) -> int:
    """Record a drill as queued and send it to the archiver; its id (GET /api/archival/drills/{id})."""
    engine.init()
    drill_id = engine.ledger.open_drill(sample, table, requested_by)
    request = DrillRequest(drill_id=drill_id, sample=sample, table=table, requested_at=datetime.now(UTC),
                           traceparent=telemetry.inject())
    try:
        transport.send_drill(request)
    except Exception as error:
        engine.ledger.fail_drill(drill_id, f"could not be queued: {render_error(error)}")
        raise
    return drill_id


def handle_drill(engine: Engine, transport: Transport, body: bytes, message_id: str | None = None) -> str:
    """Run a queued drill once; a redelivery after its worker died runs it again (a drill only reads)."""
    try:
        request = parse(body, DrillRequest)
    except MessageError as error:
        return _poison(transport, engine.settings.requests_queue, body, error, message_id)
    engine.init()
    if engine.ledger.drill_record(request.drill_id) is None:
        return _poison(transport, engine.settings.requests_queue, body,
                       MessageError(f"drill {request.drill_id} is not in the ledger"), message_id)
    if engine.ledger.start_drill(request.drill_id) is None:
        return "drill already finished"
    with telemetry.continued(request.traceparent), telemetry.span("drill", drill_id=request.drill_id):
        try:
            results = engine.drill(request.sample, table=request.table, drill_id=request.drill_id)
        except (ArchiverError, psycopg.Error) as error:
            if is_transient(error):
                raise
            engine.ledger.fail_drill(request.drill_id, render_error(error))
            return "drill failed"
    failed = [r for r in results if r.outcome == "failed"]
    offline = sum(1 for r in results if r.outcome == "offline")
    for result in failed:
        log.error("drill %s: job %s %s: %s", request.drill_id, result.job_id, result.chunk, result.detail)
    return f"drill: {len(results) - offline} checked, {len(failed)} failed, {offline} offline"


Handler = Callable[[Engine, Transport, bytes, str | None], str]


def run_queued(settings: Settings, transport: Transport, queue: str, body: bytes, message_id: str | None,
               handle: Handler, open_engine: Callable[[Settings], AbstractContextManager[Engine]]) -> str:
    """One queue-triggered invocation: a message that is not ours is poisoned without touching the database; a
    transient failure (database, lake or broker unreachable) re-sends the message with backoff and ends normally, so
    the broker neither redelivers it at once nor dead-letters it. Anything else, or a spent budget, is raised."""
    kinds = (ArchiveConfirmation,) if queue == settings.confirmations_queue else (ArchiveRequest, RestoreRequest,
                                                                                DrillRequest)
    try:
        parse(body, kinds)
    except MessageError as error:
        return _poison(transport, queue, body, error, message_id)
    try:
        with open_engine(settings) as engine:
            return handle(engine, transport, body, message_id)
    except Exception as error:
        if not is_transient(error):
            raise
        resent = resend_later(settings, transport, body)
        if resent is None:
            log.error("message %s from %s: %s; re-sent %d times already, handing it back to the broker",
                      message_id, queue, render_error(error), settings.redelivery_limit)
            raise
        new_id, delay = resent
        log.warning("message %s from %s: %s; re-sent as %s, due in %ds", message_id, queue, render_error(error),
                    new_id, int(delay.total_seconds()))
        return f"transient failure; re-sent as {new_id} in {int(delay.total_seconds())}s"


def handle_confirmation(engine: Engine, transport: Transport, body: bytes, message_id: str | None = None) -> str:
    """On success verify and drop; on failure retry with backoff until max attempts, then leave the job failed."""
    received = _receive(engine, transport, body, message_id, ArchiveConfirmation, engine.settings.confirmations_queue)
    if isinstance(received, str):
        return received
    confirmation, job = received
    with telemetry.continued(confirmation.traceparent), telemetry.span("handle_confirmation", job_id=confirmation.job_id):
        if confirmation.status == "archived":
            result = engine.drop(job.id)
            if result.outcome == "failed":
                log.warning("job %s drop failed: %s; the planner retries it", job.id, result.detail, extra={"job_id": job.id})
            return f"drop {result.outcome}"
        if job.state != JobState.FAILED:
            return "stale failure"  # a later attempt already moved on
        if job.terminal:
            log.error("job %s failed in a way no retry can fix, not retrying: %s", job.id, job.last_error,
                      extra={"job_id": job.id})
            return "gave up: terminal"
        if job.attempts >= engine.settings.max_attempts:
            log.error("job %s failed %d times, giving up: %s", job.id, job.attempts, job.last_error, extra={"job_id": job.id})
            return "gave up"
        sequence = engine.ledger.mark_enqueued(job.id)
        if sequence is None:
            return "already re-enqueued"
        transport.send_request(_request(job, sequence, "retry"), delay=retry_delay(engine.settings, job.attempts))
        return "retry scheduled"


def retry_job(engine: Engine, transport: Transport, job_id: int) -> Job:
    """An operator's retry of a failed job: fresh attempts, sent now."""
    job = engine.ledger.reset_for_retry(job_id)
    sequence = engine.ledger.mark_enqueued(job.id)
    assert sequence is not None
    transport.send_request(_request(job, sequence, "manual retry"))
    return job
