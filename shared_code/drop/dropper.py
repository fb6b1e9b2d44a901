"""Dropping an archived chunk: prove it unchanged since its archive snapshot under a lock readers pass, then drop it.

Why the change check is sound. The archive read the chunk in one REPEATABLE READ snapshot S and recorded S
(`pg_current_snapshot()`) and the rows it wrote, N. At drop time this module holds SHARE on the chunk (and on its
compressed relation), which conflicts with every INSERT, UPDATE, DELETE, TRUNCATE and (re)compression, so the rows
cannot change while it checks and drops. It then requires:

1. the chunk holds exactly N visible rows, and
2. no visible row version was written by a transaction S could not see: every row's `xmin` precedes S's xmin
   horizon (`age(xmin) > age(S.xmin)`).

Every write since S leaves a trace in one of them. An INSERT or UPDATE creates a row version whose xmin is a
transaction that started after S, or was running at S (both at or above S.xmin), so (2) fails. A DELETE alone lowers
the count, so (1) fails; a DELETE hidden by as many INSERTs still trips (2). TRUNCATE empties the relation (1); refilled,
(2). Compressing or recompressing a chunk rewrites its rows into the compressed relation under a new xmin, which
(2) inspects too. So if both hold, the visible rows are a subset of S's rows of the same size: the same rows, and the
archive holds them. The check is conservative: a row committed between S.xmin and S was taken is in the archive but
still fails (2); that costs one re-archive (whose new snapshot lies past it), never a lost row. Row versions frozen
more than 2^31 transactions ago can show a wrapped xmin; one that maps past the newest transaction ID is recognised as
such, anything else is treated as a change. A snapshot more than 2^30 transactions old is never trusted (32-bit ages
would stop ordering it), nor one taken of another relation than the one now under the chunk's name (its OID).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from ..database import catalog
from ..database import connection as db
from ..errors import ArchiverError, SourceChangedError
from ..faults import crash_point
from ..ledger.jobs import Job, Ledger
from ..planning import ChunkKind
from ..typemap import plan_columns, schema_fingerprint
from . import fingerprint

XID_SPACE = 2**32
MAX_SUSPECTS = 1000
# Far below 2^31, where 32-bit xid ages wrap: an older snapshot is never trusted (the chunk is archived again).
MAX_SNAPSHOT_AGE = 2**30


@dataclass(frozen=True)
class ArchiveSnapshot:
    """A pg_snapshot (`xmin:xmax:xip,...`, 64-bit transaction IDs) an archive was read in."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> ArchiveSnapshot:
        try:
            xmin, xmax, xip = text.split(":")
            return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))
        except ValueError:
            raise ArchiverError(f"the ledger holds a malformed archive snapshot {text[:40]!r}") from None

    @property
    def xmin32(self) -> int:
        return self.xmin % XID_SPACE

    def full_xid(self, xid32: int) -> int:
        """The 64-bit ID of a 32-bit xid near this snapshot (within 2^31 either side)."""
        delta = (xid32 - self.xmin32) % XID_SPACE
        return self.xmin + (delta - XID_SPACE if delta >= XID_SPACE // 2 else delta)


ConfirmArchive = Callable[[bool, float | None], bool]
LAKE_WAIT_S = 0.5  # the most the SHARE lock is held waiting for the lake re-check


class _LakeCheckPending(Exception):
    def __init__(self, exists: bool) -> None:
        super().__init__("the lake re-check is still running")
        self.exists = exists


@dataclass
class DropOutcome:
    done: bool
    detail: str = ""


def _relations(conn: psycopg.Connection, job: Job) -> list[tuple[sql.Composed, bool]]:
    """The chunk's relations to check: (relation, is the TimescaleDB compressed relation)."""
    rels = [(db.relation(job.chunk_schema, job.chunk_name), False)]
    compressed = catalog.compressed_relation(conn, job.chunk_schema, job.chunk_name)
    if compressed:
        rels.append((db.relation(*compressed), True))
    return rels


def changed_since(conn: psycopg.Connection, job: Job, snapshot: ArchiveSnapshot) -> str | None:
    """Why the chunk's rows may differ from its archive (see the module docstring), or None if provably unchanged.

    Call inside a transaction holding SHARE on the chunk and its compressed relation.
    """
    next_row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    assert next_row is not None
    next_xid = int(next_row[0])
    if next_xid - snapshot.xmin >= MAX_SNAPSHOT_AGE:
        # 32-bit xid ages stop ordering transactions this far apart: prove nothing, archive again
        return f"the archive snapshot is {next_xid - snapshot.xmin:,} transactions old"
    horizon = sql.Literal(str(snapshot.xmin32))
    rows, suspects = 0, 0
    relations = _relations(conn, job)
    # A TimescaleDB chunk is read ONLY, its own heap: otherwise TimescaleDB decompresses (and refuses xmin).
    # Its compressed rows are counted from their batches' row counts. A native partition may itself be partitioned,
    # so it is read whole.
    only = sql.SQL("ONLY ") if job.kind == ChunkKind.HYPERTABLE_CHUNK else sql.SQL("")
    for rel, compressed in relations:
        count = sql.SQL("coalesce(sum(_ts_meta_count), 0)") if compressed else sql.SQL("count(*)")
        row = conn.execute(sql.SQL(
            "SELECT {}, count(*) FILTER (WHERE age(xmin) <= age({}::text::xid)) FROM {}{}").format(
            count, horizon, only, rel)).fetchone()
        assert row is not None
        rows += int(row[0])
        suspects += int(row[1])
    if rows != job.row_count:
        return f"{rows} rows now, {job.row_count} archived"
    if not suspects:
        return None
    # Some row versions look newer than the snapshot: each must be a wrapped xid of a long-frozen row to pass.
    for rel, _ in relations:
        xids = [int(r[0]) for r in conn.execute(sql.SQL(
            "SELECT DISTINCT xmin::text FROM {}{} WHERE age(xmin) <= age({}::text::xid) LIMIT {}").format(
            only, rel, horizon, sql.Literal(MAX_SUSPECTS + 1))).fetchall()]
        if len(xids) > MAX_SUSPECTS:
            return f"rows written by more than {MAX_SUSPECTS} transactions since the archive snapshot"
        written = sorted(x for x in xids if snapshot.xmin <= snapshot.full_xid(x) < next_xid)
        if written:
            return f"rows written since the archive snapshot (by transaction {snapshot.full_xid(written[0])})"
    return None


class ChunkDropper:
    """Re-checks an archived chunk in the database and drops it, holding ACCESS EXCLUSIVE only for the DROP itself."""

    def __init__(self, conn: psycopg.Connection, ledger: Ledger, *, lock_timeout_ms: int, drop_lock_timeout_ms: int,
                 retries: int, unsupported_as_text: bool, sleep: Callable[[float], None] = time.sleep) -> None:
        self.conn, self.ledger = conn, ledger
        self.lock_timeout_ms, self.drop_lock_timeout_ms = lock_timeout_ms, drop_lock_timeout_ms
        self.retries, self.unsupported_as_text, self.sleep = retries, unsupported_as_text, sleep

    def drop(self, job: Job, confirm_archive: ConfirmArchive = lambda exists, timeout: True) -> DropOutcome:
        """Check and drop in one transaction; SourceChangedError if the chunk changed since its archive.

        `confirm_archive(chunk_exists, timeout)` runs before anything is dropped or recorded as dropped: True once the
        archive passed its re-check, False if that re-check (which may run on another thread meanwhile) is not done
        within `timeout` seconds; it raises if the archive fails. Locks are never held waiting for the lake: a
        pending re-check rolls the transaction back, is awaited, and the drop starts again.
        """
        attempt = 0
        while True:
            try:
                return self._drop_once(job, confirm_archive)
            except _LakeCheckPending as pending:
                confirm_archive(pending.exists, None)
                continue
            except (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected):
                if attempt == self.retries:
                    break
                self.sleep(min(0.2 * 2 ** attempt, 5.0))
                attempt += 1
        message = (f"could not lock {job.chunk.qualified_chunk} within the lock timeouts after {self.retries + 1} "
                   "tries (a long query or transaction holds it); will retry")
        self.ledger.note_error(job.id, message)
        return DropOutcome(False, message)

    def _drop_once(self, job: Job, confirm_archive: ConfirmArchive) -> DropOutcome:
        name = job.chunk.qualified_chunk
        with self.conn.transaction():
            # Every check must see what committed before the lock was granted: a statement snapshot per statement.
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            self.conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{self.lock_timeout_ms}ms")))
            if not catalog.relation_exists(self.conn, job.chunk_schema, job.chunk_name):
                if not confirm_archive(False, LAKE_WAIT_S):
                    raise _LakeCheckPending(False)
                self.ledger.mark_dropped(job.id, reason="chunk was already gone")
                return DropOutcome(True, "already gone")
            rel = db.relation(job.chunk_schema, job.chunk_name)
            # SHARE stops every writer (and recompression) but lets readers through while the rows are checked.
            for lock_rel, _ in _relations(self.conn, job):
                self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(lock_rel))
            if job.chunk_oid is not None and catalog.relation_oid(self.conn, job.chunk_schema, job.chunk_name) != job.chunk_oid:
                raise SourceChangedError(f"{name}: another table took its name since it was archived")
            columns = catalog.source_columns(self.conn, job.chunk_schema, job.chunk_name)
            if schema_fingerprint(columns) != job.schema_fingerprint:
                raise SourceChangedError(f"{name}: columns changed since it was archived")
            if job.archive_snapshot:
                reason = changed_since(self.conn, job, ArchiveSnapshot.parse(job.archive_snapshot))
            else:  # archived before snapshots were recorded: compare the full content hash taken then
                plans = plan_columns(columns, unsupported_as_text=self.unsupported_as_text)
                now_fp = fingerprint.fingerprint(self.conn, job.chunk_schema, job.chunk_name, plans)
                reason = None if now_fp.token == job.content_hash else f"{now_fp.rows} rows now, {job.row_count} archived"
            if reason:
                raise SourceChangedError(f"{name}: changed since the archive snapshot ({reason})")
            if not confirm_archive(True, LAKE_WAIT_S):
                raise _LakeCheckPending(True)
            # Readers queue behind a waiting ACCESS EXCLUSIVE request, so wait for it only briefly.
            self.conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{self.drop_lock_timeout_ms}ms")))
            if job.kind == ChunkKind.PARTITION:
                # DROP of a partition also takes ACCESS EXCLUSIVE on its parent: take it first, in the order readers
                # lock (parent, then partition), so no reader can hold the parent while waiting for the partition.
                parent = sql.SQL("{}.{}").format(sql.Identifier(job.table_schema), sql.Identifier(job.table_name))
                self.conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE").format(parent))  # not its partitions
            self.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(rel))
            self.conn.execute(sql.SQL("DROP TABLE {}").format(rel))
            self.ledger.mark_dropped(job.id)
            crash_point("before_drop_commit")
        return DropOutcome(True)
