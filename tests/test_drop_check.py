"""The drop's change check (row count + xmin against the archive snapshot) and its locks, on real PostgreSQL 15 and
TimescaleDB: every write since the archive snapshot stops the drop; nothing else does."""

import time

import psycopg
import pytest

from shared_code.database import catalog
from shared_code.database.extract import Extractor
from shared_code.drop import fingerprint
from shared_code.drop.dropper import ArchiveSnapshot, changed_since
from shared_code.errors import SourceChangedError
from shared_code.ledger import JobState
from shared_code.typemap import plan_columns

from .conftest import engine_for
from .helpers import compressible_hypertable, due_partitions, ledger_jobs, make_monthly_partitions, normalise, parquet_rows

PARENT = "public.events"


def test_snapshot_text_and_wrapped_xids():
    snap = ArchiveSnapshot.parse("4294967400:4294967410:4294967402,4294967405")
    assert (snap.xmin, snap.xmax, snap.xip) == (4294967400, 4294967410, frozenset({4294967402, 4294967405}))
    assert snap.xmin32 == 104
    assert snap.full_xid(104) == 4294967400  # same epoch
    assert snap.full_xid(110) == 4294967406
    assert snap.full_xid(2**32 - 5) == 4294967291  # just before the epoch boundary: the previous epoch
    with pytest.raises(Exception, match="malformed archive snapshot"):
        ArchiveSnapshot.parse("12:x")


def _archived(pg_dsn, tmp_path, now, rows_per_month=200):
    """One archived (not dropped) partition: (engine, job, partition name)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, rows_per_month=rows_per_month, now=now)
        target = due_partitions(conn, PARENT, now=now)[0]
    engine = engine_for(pg_dsn, tmp_path / "lake", now=now, partitioned_tables=[PARENT], retry_backoff_seconds=1,
                        lock_timeout_ms=300, drop_lock_timeout_ms=200, drop_retries=1)
    engine.run(drop=False)
    job = next(j for j in engine.ledger.all_jobs() if j.chunk_name == target)
    assert job.state == JobState.ARCHIVED and job.archive_snapshot
    return engine, job, target


def _check(engine, job) -> str | None:
    with engine.conn.transaction():
        engine.conn.execute(f"LOCK TABLE {job.chunk.qualified_chunk} IN SHARE MODE")
        return changed_since(engine.conn, job, ArchiveSnapshot.parse(job.archive_snapshot))


CHANGES = {
    "none": [],
    "vacuum freeze": ["VACUUM (FREEZE) {t}"],
    "update one row": ["UPDATE {t} SET note = 'x' WHERE ctid = (SELECT min(ctid) FROM {t})"],
    "delete one row": ["DELETE FROM {t} WHERE ctid = (SELECT min(ctid) FROM {t})"],
    "delete one, insert one": ["DELETE FROM {t} WHERE ctid = (SELECT min(ctid) FROM {t})",
                               "INSERT INTO {t} SELECT min(ts), 9, 9, 'new' FROM {t}"],
    "truncate and reload the same rows": ["CREATE TEMP TABLE keep AS SELECT * FROM {t}", "TRUNCATE {t}",
                                          "INSERT INTO {t} SELECT * FROM keep"],
    "vacuum full": ["VACUUM FULL {t}"],
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_write_since_the_snapshot_is_seen_and_nothing_else(pg_dsn, tmp_path, test_now, change):
    engine, job, target = _archived(pg_dsn, tmp_path, test_now)
    with engine, psycopg.connect(pg_dsn, autocommit=True) as other:
        for statement in CHANGES[change]:
            other.execute(statement.format(t=target))
        reason = _check(engine, job)
        # VACUUM FULL rewrites the heap but keeps every row version's xmin: no false alarm
        if change in ("none", "vacuum freeze", "vacuum full"):
            assert reason is None
        else:
            assert reason, f"{change} went unnoticed"
        report = engine.run()
        assert not report.failed
        final = next(j for j in engine.ledger.all_jobs() if j.id == job.id)
        assert final.state == JobState.DROPPED
        assert final.attempts == (1 if reason is None else 2)  # a change costs exactly one re-archive


def test_a_transaction_running_at_the_snapshot_is_a_change_when_it_commits(pg_dsn, tmp_path, test_now):
    """Same row count, but one row comes from a transaction the archive snapshot could not see."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, rows_per_month=100, now=test_now)
        target = due_partitions(conn, PARENT, now=test_now)[0]
    late = psycopg.connect(pg_dsn)
    late.execute(f"INSERT INTO {target} SELECT min(ts), 7, 7, 'in flight' FROM {target}")  # not committed yet
    engine = engine_for(pg_dsn, tmp_path / "lake", now=test_now, partitioned_tables=[PARENT])
    with engine:
        engine.run(drop=False)
        job = next(j for j in engine.ledger.all_jobs() if j.chunk_name == target)
        assert job.row_count == 100
        late.commit()
        late.close()
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute(f"DELETE FROM {target} WHERE note <> 'in flight' AND ctid = (SELECT min(ctid) FROM {target})")
            assert other.execute(f"SELECT count(*) FROM {target}").fetchone()[0] == 100
        assert "written since the archive snapshot" in (_check(engine, job) or "")
        engine.run()
        final = next(j for j in engine.ledger.all_jobs() if j.id == job.id)
        assert final.state == JobState.DROPPED and final.attempts == 2
        archived = parquet_rows(tmp_path / "lake", final.lake_paths)
        assert sum(1 for r in archived if r["note"] == "in flight") == 1 and len(archived) == 100


def test_readers_pass_the_check_and_a_long_reader_only_delays_the_drop(pg_dsn, tmp_path, test_now):
    engine, job, target = _archived(pg_dsn, tmp_path, test_now)
    reader = psycopg.connect(pg_dsn)
    reader.execute(f"SELECT count(*) FROM {target}").fetchone()  # holds ACCESS SHARE until it ends
    with engine:
        started = time.monotonic()
        result = engine.drop(job.id)
        assert result.outcome == "failed" and "could not lock" in result.detail
        assert time.monotonic() - started < 5
        assert reader.execute(f"SELECT count(*) FROM {target}").fetchone()[0] == 200  # never blocked
        assert engine.ledger.get(job.id).state == JobState.ARCHIVED
        reader.rollback()
        reader.close()
        assert engine.drop(job.id).outcome == "done"


def test_a_pending_writer_makes_the_drop_wait_then_reconsider(pg_dsn, tmp_path, test_now):
    engine, job, target = _archived(pg_dsn, tmp_path, test_now)
    writer = psycopg.connect(pg_dsn)
    writer.execute(f"INSERT INTO {target} SELECT min(ts), 8, 8, 'pending' FROM {target}")
    with engine:
        result = engine.drop(job.id)  # SHARE waits for the writer's ROW EXCLUSIVE, then times out
        assert result.outcome == "failed" and "could not lock" in result.detail
        writer.commit()
        writer.close()
        assert engine.drop(job.id).outcome == "done"  # re-archived with the pending row first
        final = engine.ledger.get(job.id)
        assert final.attempts == 2
        assert sum(1 for r in parquet_rows(tmp_path / "lake", final.lake_paths) if r["note"] == "pending") == 1


def test_while_the_rows_are_checked_readers_pass_and_writers_wait(pg_dsn, tmp_path, test_now, monkeypatch):
    """The row scan runs under SHARE: at that moment a reader's query completes, a writer's cannot."""
    import shared_code.drop.dropper as dropper

    engine, job, target = _archived(pg_dsn, tmp_path, test_now)
    seen: dict[str, object] = {}
    original = dropper.changed_since

    def probing(conn, job_, snapshot):
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute("SET lock_timeout = '300ms'")
            seen["reader"] = other.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
            try:
                other.execute(f"INSERT INTO {target} SELECT min(ts), 1, 1, 'w' FROM {target}")
                seen["writer"] = "inserted"
            except psycopg.errors.LockNotAvailable:
                seen["writer"] = "waited"
        return original(conn, job_, snapshot)

    monkeypatch.setattr(dropper, "changed_since", probing)
    with engine:
        assert engine.drop(job.id).outcome == "done"
    assert seen == {"reader": 200, "writer": "waited"}


def test_a_job_archived_before_snapshots_falls_back_to_the_content_hash(pg_dsn, tmp_path, test_now):
    engine, job, target = _archived(pg_dsn, tmp_path, test_now)
    with engine:
        plans = plan_columns(catalog.source_columns(engine.conn, job.chunk_schema, job.chunk_name))
        token = fingerprint.fingerprint(engine.conn, job.chunk_schema, job.chunk_name, plans).token
        engine.conn.execute("UPDATE archiver.jobs SET archive_snapshot = NULL, content_hash = %s WHERE id = %s",
                            (token, job.id))
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute(f"UPDATE {target} SET value = -1 WHERE ctid = (SELECT min(ctid) FROM {target})")
        engine.run()
    final = next(j for j in ledger_jobs(pg_dsn) if j.id == job.id)
    assert final.state == JobState.DROPPED and final.attempts == 2 and final.archive_snapshot


def test_parallel_streams_read_one_snapshot(pg_dsn):
    """Three ctid-range streams see exactly the rows of one snapshot, even while rows are added meanwhile."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, payload text)")
        conn.execute("INSERT INTO t SELECT g, repeat('x', g % 50) FROM generate_series(1, 60000) g")
        pages = catalog.heap_pages(conn, "public", "t")
        columns = catalog.source_columns(conn, "public", "t")
    extractor = Extractor(lambda: pg_dsn, batch_size_bytes=64 * 1024, max_streams=3, min_pages_per_stream=1)
    try:
        with extractor.snapshot("public", "t", plan_columns(columns), {}, pages=pages) as snap:
            assert snap.streams == 3
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO t SELECT g, 'late' FROM generate_series(60001, 61000) g")
            ids = sorted(i for batch in snap.batches for i in batch.column("id").to_pylist())
        assert ids == list(range(1, 60001))
        # the connections are kept: a second read reuses them and sees the late rows
        with extractor.snapshot("public", "t", plan_columns(columns), {}, pages=pages) as snap:
            assert sum(b.num_rows for b in snap.batches) == 61000
        assert len(extractor._idle) == 3
    finally:
        extractor.close()


def test_a_compressed_chunk_streams_over_time_slices_of_one_snapshot(native_tsdb):
    """A compressed chunk (empty heap) is read by three time-slice streams sharing one snapshot: every row once, none
    inserted meanwhile; the slices' bounds need not match the data (the outer ones are open)."""
    from datetime import UTC, datetime

    from shared_code.database.extract import TimeSlices

    table = f"{native_tsdb.schema}.squeezed"
    with native_tsdb.connect() as conn:
        compressible_hypertable(conn, table, "30 days")
        # 30-day chunks from the epoch: one starts on 2020-01-09, and these 28 days all fall in it
        conn.execute(f"INSERT INTO {table} SELECT '2020-01-09'::timestamptz + g * interval '1 minute', g % 4, g "
                     "FROM generate_series(0, 40000) g")
        chunk = conn.execute(f"SELECT show_chunks('{table}')").fetchone()[0]
        conn.execute(f"SELECT compress_chunk('{chunk}')")
        schema, name = chunk.split(".")
        source = catalog.chunk_source(conn, "hypertable", native_tsdb.schema, "squeezed", schema, name)
    assert source is not None and source.compressed and source.heap_pages == 0 and source.compressed_pages > 0
    slices = TimeSlices("ts", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 31, tzinfo=UTC),
                        source.compressed_pages)  # cuts on 2020-01-11 and 01-21, not the chunk's own bounds
    extractor = Extractor(lambda: native_tsdb.dsn, batch_size_bytes=64 * 1024, max_streams=3, min_pages_per_stream=1)
    try:
        with extractor.snapshot(schema, name, plan_columns(source.columns), {}, slices=slices) as snap:
            assert snap.streams == 3
            with native_tsdb.connect() as conn:  # lands in the compressed chunk's uncompressed part, after the snapshot
                conn.execute(f"INSERT INTO {table} VALUES ('2020-01-15', 9, -1)")
            values = sorted(v for batch in snap.batches for v in batch.column("value").to_pylist())
        assert values == list(range(40001))
    finally:
        extractor.close()


def test_recompressed_and_updated_compressed_chunks_are_changes(timescale, tmp_path, test_now):
    """TimescaleDB: a chunk compressed at archive time, then recompressed, or one row updated, is re-archived."""
    table = f"{timescale.schema}.metrics"
    with timescale.connect() as conn:
        compressible_hypertable(conn, table, "7 days")
        # 7-day chunks start on Thursdays (the epoch's weekday): 2020-01-09 and 2020-01-16, two whole chunks
        conn.execute(f"INSERT INTO {table} SELECT '2020-01-09'::timestamptz + g * interval '1 minute', g % 3, g "
                     "FROM generate_series(0, 14 * 1440 - 1) g")
        chunks = [r[0] for r in conn.execute(f"SELECT show_chunks('{table}')").fetchall()]
        for chunk in chunks:
            conn.execute(f"SELECT compress_chunk('{chunk}')")
    engine = engine_for(timescale.dsn, tmp_path / "lake", now=test_now, include=[f"{timescale.schema}.*"],
                        ledger_schema=timescale.ledger)
    with engine:
        engine.run(drop=False)
        jobs = sorted(engine.ledger.all_jobs(), key=lambda j: str(j.range_start))
        assert len(jobs) == 2 and all(j.is_compressed and j.state == JobState.ARCHIVED for j in jobs)
        with timescale.connect() as conn:
            untouched = _check(engine, jobs[0])
            conn.execute(f"SELECT decompress_chunk('{jobs[0].chunk.qualified_chunk}')")
            conn.execute(f"SELECT compress_chunk('{jobs[0].chunk.qualified_chunk}')")
            conn.execute(f"UPDATE {table} SET value = -1 WHERE ts = '2020-01-20 00:00:00+00'")
        assert untouched is None
        assert _check(engine, jobs[0]) and _check(engine, jobs[1])
        report = engine.run()
        assert not report.failed
        final = sorted(engine.ledger.all_jobs(), key=lambda j: str(j.range_start))
        assert [(j.state, j.attempts) for j in final] == [(JobState.DROPPED, 2), (JobState.DROPPED, 2)]
        rows = [r for j in final for r in parquet_rows(tmp_path / "lake", j.lake_paths)]
        assert len(rows) == 14 * 1440 and sum(1 for r in rows if r["value"] == -1) == 1
        assert normalise(rows[0]["ts"]) is not None


def test_another_table_under_the_chunks_name_is_a_change(pg_dsn, tmp_path, test_now):
    """Same name, same rows, old row versions: only the relation's identity (OID) tells them apart."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=25, now=test_now)
        target = due_partitions(conn, PARENT, now=test_now)[0]
        conn.execute(f"CREATE TABLE twin AS SELECT * FROM {target}")  # written before the archive snapshot
    engine = engine_for(pg_dsn, tmp_path / "lake", now=test_now, partitioned_tables=[PARENT])
    with engine:
        engine.run(drop=False)
        job = next(j for j in engine.ledger.all_jobs() if j.chunk_name == target)
        assert job.chunk_oid
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {target}")
            conn.execute(f"ALTER TABLE {target} RENAME TO original")
            conn.execute(f"ALTER TABLE twin RENAME TO {target}")
        with pytest.raises(SourceChangedError, match="another table took its name"):
            engine.dropper.drop(job)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('public.original')").fetchone()[0] is not None


def test_a_snapshot_too_old_to_order_is_never_trusted(pg_dsn, tmp_path, test_now, monkeypatch):
    import shared_code.drop.dropper as dropper

    engine, job, _ = _archived(pg_dsn, tmp_path, test_now)
    with engine:
        assert _check(engine, job) is None
        monkeypatch.setattr(dropper, "MAX_SNAPSHOT_AGE", 1)
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute("SELECT pg_current_xact_id()")  # one more transaction id used since the snapshot
        assert "transactions old" in (_check(engine, job) or "")


def test_a_table_listed_twice_plans_each_chunk_once(pg_dsn, tmp_path, test_now):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26, now=test_now)
        due = due_partitions(conn, PARENT, now=test_now)
    with engine_for(pg_dsn, tmp_path / "lake", now=test_now, partitioned_tables=[PARENT, PARENT]) as engine:
        report = engine.run()
    assert not report.failed
    assert sorted(j.chunk_name for j in ledger_jobs(pg_dsn)) == sorted(due)


def test_time_slices_cover_every_value_once_whatever_the_bounds():
    """The slices' WHERE clauses: open outer slices (NULL in the first), integer and timestamp cuts, one stream when
    the range cannot be cut."""
    from datetime import UTC, datetime

    from shared_code.database.extract import TimeSlices, time_filters

    stamps = time_filters(TimeSlices("Start At", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 31, tzinfo=UTC), 9), 3)
    assert stamps == [
        ' WHERE ("Start At" < \'2020-01-11T00:00:00+00:00\'::timestamptz OR "Start At" IS NULL)',
        ' WHERE "Start At" >= \'2020-01-11T00:00:00+00:00\'::timestamptz '
        'AND "Start At" < \'2020-01-21T00:00:00+00:00\'::timestamptz',
        ' WHERE "Start At" >= \'2020-01-21T00:00:00+00:00\'::timestamptz']
    assert time_filters(TimeSlices("t", 0, 101, 9), 2) == [' WHERE ("t" < 50 OR "t" IS NULL)', ' WHERE "t" >= 50']
    assert time_filters(TimeSlices("t", 0, 100, 9), 1) == [""]
    assert time_filters(TimeSlices("t", 5, 5, 9), 4) == [""]  # an empty range: one stream reads it all
