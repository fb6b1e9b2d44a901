"""The jobs table: one row per chunk, moved only by named compare-and-set transitions; session-bound claims."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..errors import JobStateError
from ..planning import Chunk, ChunkKind
from . import migrations
from .records import DrillRecords, RestoreRecords


class JobState(StrEnum):
    PLANNED = "planned"
    ARCHIVING = "archiving"
    ARCHIVED = "archived"
    DROPPED = "dropped"
    FAILED = "failed"
    BLOCKED = "blocked"



@dataclass(frozen=True)
class Job:
    id: int
    kind: ChunkKind
    table_schema: str
    table_name: str
    chunk_schema: str
    chunk_name: str
    range_start: datetime | int | None
    range_end: datetime | int | None
    is_compressed: bool
    state: JobState
    reason: str | None
    attempts: int
    last_error: str | None
    lake_paths: list[str]
    manifest_path: str | None
    row_count: int | None
    byte_count: int | None
    checksums: dict[str, str]
    content_hash: str | None
    schema_fingerprint: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    dropped_at: datetime | None
    next_attempt_at: datetime | None
    table_path: str | None = None
    delta_version: int | None = None
    archive_snapshot: str | None = None
    chunk_oid: int | None = None
    columns: list[dict[str, str]] | None = None  # name and PostgreSQL type, from the catalog at archive time
    manifest_sha256: str | None = None
    terminal: bool = False  # failed in a way no automatic retry can fix
    vault_manifest: str | None = None  # the sealed immutable copy (vault.py), when a vault is configured
    vault_manifest_sha256: str | None = None
    file_parts: dict[str, list] = field(default_factory=dict)  # path -> [[offset, length, sha256], ...] (file_parts.py)

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"

    @property
    def chunk(self) -> Chunk:
        return Chunk(
            kind=self.kind, table_schema=self.table_schema, table_name=self.table_name,
            chunk_schema=self.chunk_schema, chunk_name=self.chunk_name,
            range_start=self.range_start, range_end=self.range_end, is_compressed=self.is_compressed,
            integer_time=isinstance(self.range_start, int) or isinstance(self.range_end, int),
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, StrEnum) else value
        return out


def _range_columns(job: Job) -> tuple[Any, Any, Any, Any]:
    """range_start, range_end, range_start_int, range_end_int as the jobs table stores a job's range."""
    integer = isinstance(job.range_start, int) or isinstance(job.range_end, int)
    return (None, None, job.range_start, job.range_end) if integer else (job.range_start, job.range_end, None, None)


def _job(row: dict[str, Any]) -> Job:
    integer = row["range_start_int"] is not None or row["range_end_int"] is not None
    return Job(
        id=row["id"], kind=ChunkKind(row["kind"]), table_schema=row["table_schema"], table_name=row["table_name"],
        chunk_schema=row["chunk_schema"], chunk_name=row["chunk_name"],
        range_start=row["range_start_int"] if integer else row["range_start"],
        range_end=row["range_end_int"] if integer else row["range_end"],
        is_compressed=row["is_compressed"], state=JobState(row["state"]), reason=row["reason"],
        attempts=row["attempts"], last_error=row["last_error"], lake_paths=list(row["lake_paths"] or []),
        manifest_path=row["manifest_path"], row_count=row["row_count"], byte_count=row["byte_count"],
        checksums=dict(row["checksums"] or {}), content_hash=row["content_hash"],
        schema_fingerprint=row["schema_fingerprint"], created_at=row["created_at"], updated_at=row["updated_at"],
        archived_at=row["archived_at"], dropped_at=row["dropped_at"], next_attempt_at=row["next_attempt_at"],
        table_path=row.get("table_path"), delta_version=row.get("delta_version"),
        archive_snapshot=row.get("archive_snapshot"), chunk_oid=row.get("chunk_oid"),
        columns=row.get("columns"), manifest_sha256=row.get("manifest_sha256"), terminal=bool(row.get("terminal")),
        vault_manifest=row.get("vault_manifest"), vault_manifest_sha256=row.get("vault_manifest_sha256"),
        file_parts=dict(row.get("file_parts") or {}),
    )



class Ledger(DrillRecords, RestoreRecords):
    """The ledger in the source database: job rows in `<schema>.jobs` (here), drills and restores (records.py)."""

    def __init__(self, conn: psycopg.Connection, schema: str = "archiver") -> None:
        self.conn = conn
        self.schema = schema
        self._jobs = sql.SQL("{}.jobs").format(sql.Identifier(schema))

    # -- migrations -------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations under a lock; safe to run concurrently and repeatedly."""
        return migrations.migrate(self.conn, self.schema)

    def version(self) -> int:
        return migrations.applied_version(self.conn, self.schema)

    # -- reads ------------------------------------------------------------------------------
    def _select(self, where: sql.Composable, params: tuple | dict = (), suffix: str = "ORDER BY id") -> list[Job]:
        query = sql.SQL("SELECT * FROM {} WHERE {} " + suffix).format(self._jobs, where)
        with self.conn.cursor(row_factory=dict_row) as cur:
            return [_job(row) for row in cur.execute(query, params).fetchall()]

    def get(self, job_id: int) -> Job | None:
        jobs = self._select(sql.SQL("id = %s"), (job_id,))
        return jobs[0] if jobs else None

    def dropped_twin(self, job: Job) -> Job | None:
        """An earlier job that archived and dropped the same chunk (same name and range): `job` was planned from a
        catalog read taken before that drop (two planners at once)."""
        jobs = self._select(sql.SQL(
            "chunk_schema = %s AND chunk_name = %s AND state = 'dropped' AND id < %s "
            "AND range_start IS NOT DISTINCT FROM %s AND range_end IS NOT DISTINCT FROM %s "
            "AND range_start_int IS NOT DISTINCT FROM %s AND range_end_int IS NOT DISTINCT FROM %s"),
            (job.chunk_schema, job.chunk_name, job.id, *_range_columns(job)))
        return jobs[-1] if jobs else None

    def retire_twin(self, job_id: int) -> bool:
        """archiving -> gone: delete a job that wrote nothing because its chunk was archived and dropped by a twin
        (dropped_twin); the ledger keeps one job per archived chunk."""
        row = self.conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s AND state = 'archiving' AND lake_paths = '[]' "
                                        "RETURNING id").format(self._jobs), (job_id,)).fetchone()
        return row is not None

    def live_for(self, chunk: Chunk) -> Job | None:
        jobs = self._select(
            sql.SQL("chunk_schema = %s AND chunk_name = %s AND state <> 'dropped'"), (chunk.chunk_schema, chunk.chunk_name)
        )
        return jobs[0] if jobs else None

    def jobs(self, states: list[str] | None = None, table: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        clauses: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if states:
            clauses.append(sql.SQL("state = ANY(%s)"))
            params.append(list(states))
        if table:
            clauses.append(sql.SQL("table_schema || '.' || table_name = %s"))
            params.append(table)
        return self._select(
            sql.SQL(" AND ").join(clauses), (*params, limit, offset), "ORDER BY updated_at DESC, id DESC LIMIT %s OFFSET %s"
        )

    def all_jobs(self) -> list[Job]:
        return self._select(sql.SQL("true"))

    # -- writes -----------------------------------------------------------------------------
    def record(self, chunk: Chunk, state: JobState, reason: str = "") -> Job:
        """Insert a planned/blocked job for a chunk, or refresh a planned/blocked one; others are left alone."""
        return self.record_many([(chunk, state, reason)])[0]

    def record_many(self, entries: list[tuple[Chunk, JobState, str]]) -> list[Job]:
        """record() for many chunks in one statement (a plan of 10,000 chunks is one round trip), in input order; a
        chunk dropped since the plan read the catalog (its only job dropped, its relation gone) is left out."""
        if not entries:
            return []
        # One row per chunk (a table listed twice plans its chunks twice), in key order: two planners at once take
        # the unique index's locks in the same order and cannot deadlock.
        unique = {(c.chunk_schema, c.chunk_name): (c, state, reason) for c, state, reason in reversed(entries)}
        ordered = [unique[key] for key in sorted(unique)]
        columns: dict[str, list[Any]] = {k: [] for k in ("kind", "ts", "tn", "cs", "cn", "rs", "re", "rsi", "rei",
                                                          "comp", "state", "reason")}
        for chunk, state, reason in ordered:
            integer = chunk.integer_time
            values = (str(chunk.kind), chunk.table_schema, chunk.table_name, chunk.chunk_schema, chunk.chunk_name,
                      None if integer else chunk.range_start, None if integer else chunk.range_end,
                      chunk.range_start if integer else None, chunk.range_end if integer else None,
                      chunk.is_compressed, str(state), reason or None)
            for key, value in zip(columns, values, strict=True):
                columns[key].append(value)
        query = sql.SQL(
            """
            INSERT INTO {jobs} (kind, table_schema, table_name, chunk_schema, chunk_name, range_start, range_end,
                                range_start_int, range_end_int, is_compressed, state, reason)
            SELECT * FROM unnest(%(kind)s::text[], %(ts)s::text[], %(tn)s::text[], %(cs)s::text[], %(cn)s::text[],
                                 %(rs)s::timestamptz[], %(re)s::timestamptz[], %(rsi)s::bigint[], %(rei)s::bigint[],
                                 %(comp)s::boolean[], %(state)s::text[], %(reason)s::text[])
                          AS u(kind, ts, tn, cs, cn, rs, re, rsi, rei, comp, state, reason)
            -- a chunk another worker archived and dropped after this plan read the catalog is not planned again
            -- (its relation is gone); one that exists again under the same name (a partition re-created) is
            WHERE NOT EXISTS (SELECT 1 FROM {jobs} d WHERE d.chunk_schema = u.cs AND d.chunk_name = u.cn
                                                       AND d.state = 'dropped')
               OR to_regclass(format('%%I.%%I', u.cs, u.cn)) IS NOT NULL
            ON CONFLICT (chunk_schema, chunk_name) WHERE state <> 'dropped' DO UPDATE
               SET state = CASE WHEN {jobs}.state IN ('planned', 'blocked') THEN EXCLUDED.state ELSE {jobs}.state END,
                   reason = CASE WHEN {jobs}.state IN ('planned', 'blocked') THEN EXCLUDED.reason ELSE {jobs}.reason END,
                   is_compressed = EXCLUDED.is_compressed,
                   updated_at = CASE WHEN {jobs}.state IN ('planned', 'blocked') AND {jobs}.state <> EXCLUDED.state
                                     THEN now() ELSE {jobs}.updated_at END
            RETURNING *
            """
        ).format(jobs=self._jobs)
        with self.conn.cursor(row_factory=dict_row) as cur:
            by_chunk = {(r["chunk_schema"], r["chunk_name"]): _job(r) for r in cur.execute(query, columns).fetchall()}
        keys = [(chunk.chunk_schema, chunk.chunk_name) for chunk, _, _ in entries]
        return [by_chunk[key] for key in keys if key in by_chunk]

    def transition(self, job_id: int, from_states: list[JobState], to_state: JobState, **fields: Any) -> Job:
        """Compare-and-set: move a job only if it is in one of `from_states`."""
        assignments = [sql.SQL("state = %s"), sql.SQL("updated_at = now()")]
        params: list[Any] = [str(to_state)]
        for name, value in fields.items():
            if name in ("lake_paths", "checksums", "columns", "file_parts"):
                value = json.dumps(value)
            if value == "now()":
                assignments.append(sql.SQL("{} = now()").format(sql.Identifier(name)))
                continue
            assignments.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
            params.append(value)
        query = sql.SQL("UPDATE {} SET {} WHERE id = %s AND state = ANY(%s) RETURNING *").format(
            self._jobs, sql.SQL(", ").join(assignments)
        )
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query, (*params, job_id, [str(s) for s in from_states])).fetchone()
        if row is None:
            current = self.get(job_id)
            state = current.state if current else "missing"
            raise JobStateError(
                f"job {job_id} is {state}; expected one of {', '.join(map(str, from_states))} to move it to {to_state}"
            )
        return _job(row)

    def mark_archived(self, job_id: int, *, lake_paths: list[str], checksums: dict[str, str], manifest_path: str,
                      row_count: int, byte_count: int, content_hash: str, schema_fingerprint: str, table_path: str,
                      delta_version: int | None, archive_snapshot: str | None, chunk_oid: int | None,
                      columns: list[dict[str, str]], manifest_sha256: str, vault_manifest: str | None = None,
                      vault_manifest_sha256: str | None = None, file_parts: dict[str, list] | None = None) -> Job:
        """archiving -> archived: the committed files, their checksums, the Delta table version holding them, and
        the sealed vault copy (if any)."""
        return self.transition(
            job_id, [JobState.ARCHIVING], JobState.ARCHIVED, lake_paths=lake_paths, checksums=checksums,
            manifest_path=manifest_path, row_count=row_count, byte_count=byte_count, content_hash=content_hash,
            schema_fingerprint=schema_fingerprint, table_path=table_path, delta_version=delta_version,
            archive_snapshot=archive_snapshot, chunk_oid=chunk_oid, columns=columns, manifest_sha256=manifest_sha256,
            vault_manifest=vault_manifest, vault_manifest_sha256=vault_manifest_sha256, file_parts=file_parts or {},
            archived_at="now()", claimed_by_pid=None,
            next_attempt_at=None,
        )

    def start_archiving(self, job: Job, sources: list[JobState], backend_pid: int) -> Job:
        """planned/failed/(archived on a re-archive) -> archiving: one more attempt, claimed by this backend."""
        return self.transition(job.id, sources, JobState.ARCHIVING, attempts=job.attempts + 1,
                               claimed_by_pid=backend_pid, claimed_at="now()", last_error=None, terminal=False)

    def mark_failed(self, job_id: int, message: str, next_attempt_at: datetime | None) -> Job:
        """archiving -> failed, with the error and when a retry may start."""
        return self.transition(job_id, [JobState.ARCHIVING], JobState.FAILED, last_error=message,
                               next_attempt_at=next_attempt_at, claimed_by_pid=None)

    def mark_failed_terminal(self, job_id: int, message: str) -> Job:
        """archiving -> failed, not to be retried automatically: no retry can help until someone fixes the cause
        (`tsarchive retry`, the HTTP retry route, or the next `tsarchive run` after a settings change)."""
        return self.transition(job_id, [JobState.ARCHIVING], JobState.FAILED, last_error=message,
                               next_attempt_at=None, claimed_by_pid=None, terminal=True)

    def mark_dropped(self, job_id: int, reason: str | None = None) -> Job:
        """archived -> dropped (in the drop's own transaction, so the ledger and the catalog agree)."""
        return self.transition(job_id, [JobState.ARCHIVED], JobState.DROPPED, dropped_at="now()", last_error=None,
                               reason=reason)

    def hold_drop(self, job_id: int, reason: str) -> None:
        """Record why an archived chunk is kept for now (retention changed, a continuous aggregate needs it)."""
        self.conn.execute(sql.SQL("UPDATE {} SET reason = %s, updated_at = now() WHERE id = %s").format(self._jobs),
                          (f"drop held: {reason}", job_id))

    def note_error(self, job_id: int, message: str) -> None:
        """Record a failed step on a job without moving it (a drop that could not lock or failed in the database)."""
        self.conn.execute(sql.SQL("UPDATE {} SET last_error = %s, updated_at = now() WHERE id = %s").format(self._jobs),
                          (message, job_id))


    def restorable(self, table: str) -> list[Job]:
        """A table's archived or dropped jobs, oldest range first."""
        return self._select(sql.SQL("table_schema || '.' || table_name = %s AND state IN ('archived', 'dropped') "
                                    "AND manifest_path IS NOT NULL"), (table,),
                            "ORDER BY coalesce(range_start_int, 0), range_start NULLS FIRST, id")

    def state_counts(self) -> list[tuple[str, int, int, int, datetime | None]]:
        """Per state: jobs, rows, bytes, last update."""
        rows = self.conn.execute(sql.SQL(
            "SELECT state, count(*), coalesce(sum(row_count), 0), coalesce(sum(byte_count), 0), max(updated_at) "
            "FROM {} GROUP BY state").format(self._jobs)).fetchall()
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4]) for r in rows]

    def metrics(self, max_attempts: int) -> dict[str, float]:
        """Totals for the metrics endpoint."""
        row = self.conn.execute(sql.SQL(
            """
            SELECT count(*) FILTER (WHERE state IN ('archived', 'dropped')),
                   count(*) FILTER (WHERE state = 'dropped'),
                   count(*) FILTER (WHERE state = 'failed'),
                   count(*) FILTER (WHERE state = 'failed' AND attempts >= %s),
                   count(*) FILTER (WHERE state = 'blocked'),
                   count(*) FILTER (WHERE state IN ('planned', 'archiving', 'failed')),
                   coalesce(sum(row_count) FILTER (WHERE state IN ('archived', 'dropped')), 0),
                   coalesce(sum(byte_count) FILTER (WHERE state IN ('archived', 'dropped')), 0),
                   coalesce(avg(extract(epoch FROM archived_at - claimed_at)) FILTER (WHERE archived_at >= claimed_at), 0),
                   coalesce(max(extract(epoch FROM archived_at - claimed_at)) FILTER (WHERE archived_at >= claimed_at), 0)
            FROM {}
            """).format(self._jobs), (max_attempts,)).fetchone()
        assert row is not None
        keys = ["chunks_archived", "chunks_dropped", "chunks_failed", "chunks_failed_permanently", "chunks_blocked",
                "backlog", "rows_archived", "bytes_archived", "archive_seconds_avg", "archive_seconds_max"]
        return {k: float(v) if k.startswith("archive_seconds") else int(v) for k, v in zip(keys, row, strict=True)}

    def enqueueable(self, requeue_after_s: int, max_attempts: int, table: str | None = None) -> list[Job]:
        """Jobs a planner should (re)send: new, retry-ready, or archived and not dropped for a while."""
        query = sql.SQL(
            """
            state IN ('planned', 'failed', 'archiving', 'archived')
            AND (state <> 'failed' OR (attempts < %(max)s AND NOT terminal
                                       AND (next_attempt_at IS NULL OR next_attempt_at <= now())))
            AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => %(after)s))
            AND (state <> 'archiving' OR claimed_at < now() - make_interval(secs => %(after)s))
            AND (%(table)s::text IS NULL OR table_schema || '.' || table_name = %(table)s)
            """
        )
        return self._select(query, {"max": max_attempts, "after": requeue_after_s, "table": table})  # type: ignore[arg-type]

    def mark_enqueued(self, job_id: int, requeue_after_s: int = 0) -> int | None:
        """Claim the next send of a job: its sequence number, or None if another planner just sent it."""
        row = self.conn.execute(
            sql.SQL(
                "UPDATE {} SET enqueued_at = now(), enqueue_count = enqueue_count + 1 WHERE id = %s "
                "AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => %s)) RETURNING enqueue_count"
            ).format(self._jobs),
            (job_id, requeue_after_s),
        ).fetchone()
        return int(row[0]) if row else None

    def reset_for_retry(self, job_id: int) -> Job:
        """An operator's retry: a failed job gets a fresh attempt budget."""
        return self.transition(job_id, [JobState.FAILED], JobState.PLANNED, attempts=0, last_error=None,
                               next_attempt_at=None, enqueued_at=None, terminal=False)

    # -- claims -----------------------------------------------------------------------------
    def _lock_key(self, job_id: int) -> str:
        return f"tsarchive:{self.schema}:{job_id}"

    def try_claim(self, job_id: int) -> bool:
        """Session-level advisory lock: held while this connection lives, released if the worker dies."""
        row = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._lock_key(job_id),)).fetchone()
        return bool(row and row[0])

    def release(self, job_id: int) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (self._lock_key(job_id),))

    @contextmanager
    def claimed(self, job_id: int) -> Iterator[bool]:
        """Yield whether this worker holds the job; release on exit."""
        held = self.try_claim(job_id)
        try:
            yield held
        finally:
            if held:
                self.release(job_id)
