"""The ledger on real PostgreSQL 15: migrations, compare-and-set transitions, session-bound claims."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest

from shared_code.errors import JobStateError
from shared_code.ledger import JobState, Ledger
from shared_code.planning import Chunk, ChunkKind

from .helpers import wait_session_gone

CHUNK = Chunk(ChunkKind.PARTITION, "public", "events", "public", "events_2020_01",
              datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC))


def _migrate(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ledger = Ledger(conn, "archiver")
        ledger.migrate()
        return ledger.version()


def test_migrations_idempotent_and_concurrent(pg_dsn):
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(_migrate, [pg_dsn] * 4))
    assert len(set(versions)) == 1 and versions[0] >= 1
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        applied = conn.execute("SELECT count(*) FROM archiver.schema_migrations").fetchone()[0]
    assert applied == versions[0]


def test_record_is_idempotent_and_keeps_progress(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ledger = Ledger(conn, "archiver")
        ledger.migrate()
        job = ledger.record(CHUNK, JobState.PLANNED)
        assert ledger.record(CHUNK, JobState.PLANNED).id == job.id
        blocked = ledger.record(CHUNK, JobState.BLOCKED, "cagg")
        assert blocked.state == JobState.BLOCKED and blocked.reason == "cagg"
        ledger.transition(job.id, [JobState.BLOCKED], JobState.ARCHIVING)
        assert ledger.record(CHUNK, JobState.PLANNED).state == JobState.ARCHIVING  # in-flight work is not reset


def test_a_chunk_dropped_since_the_plan_read_the_catalog_is_not_planned_again(pg_dsn):
    """Two workers: one plans from a catalog read that still lists a chunk the other then archives and drops. Its
    record skips that chunk (no job for a relation that is gone); once the partition exists again, it is planned."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ledger = Ledger(conn, "archiver")
        ledger.migrate()
        conn.execute("CREATE TABLE public.events_2020_01 (ts timestamptz)")
        job = ledger.record(CHUNK, JobState.PLANNED)
        ledger.transition(job.id, [JobState.PLANNED], JobState.ARCHIVED)
        conn.execute("DROP TABLE public.events_2020_01")
        ledger.mark_dropped(job.id)
        assert ledger.record_many([(CHUNK, JobState.PLANNED, "")]) == []
        conn.execute("CREATE TABLE public.events_2020_01 (ts timestamptz)")  # re-created, rows restored into it
        (again,) = ledger.record_many([(CHUNK, JobState.PLANNED, "")])
        assert again.id != job.id and again.state == JobState.PLANNED


def test_transition_is_compare_and_set(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ledger = Ledger(conn, "archiver")
        ledger.migrate()
        job = ledger.record(CHUNK, JobState.PLANNED)
        ledger.transition(job.id, [JobState.PLANNED], JobState.ARCHIVING)
        with pytest.raises(JobStateError, match="is archiving"):
            ledger.transition(job.id, [JobState.PLANNED], JobState.ARCHIVING)
        moved = ledger.transition(job.id, [JobState.ARCHIVING], JobState.ARCHIVED, lake_paths=["a.parquet"],
                                  checksums={"a.parquet": "x"}, row_count=3)
        assert moved.lake_paths == ["a.parquet"] and moved.checksums == {"a.parquet": "x"} and moved.row_count == 3


def test_claim_tied_to_session(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as a, psycopg.connect(pg_dsn, autocommit=True) as b:
        la, lb = Ledger(a), Ledger(b)
        la.migrate()
        job = la.record(CHUNK, JobState.PLANNED)
        assert la.try_claim(job.id)
        assert not lb.try_claim(job.id)
        pid = a.info.backend_pid
        a.close()
        wait_session_gone(pg_dsn, pid)  # the worker's session ends (crash): the claim is free immediately
        assert lb.try_claim(job.id)
        lb.release(job.id)
