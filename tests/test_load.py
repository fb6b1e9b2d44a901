"""Load: the planner timer fires twice at once, then 4 archiver and 4 dropper workers (the real function handlers, in
threads) work a 200-chunk queue on Azurite with every message delivered twice. Each chunk is archived once, in one
table commit, and dropped once; no job or message id is duplicated."""

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from azure.functions.timer import TimerRequest
from deltalake import DeltaTable

from shared_code.messages import ArchiveRequest

from .conftest import AZURITE_CONNECTION_STRING
from .functions_support import drain, load_app, queue_names, user_function
from .helpers import ledger_jobs

CHUNKS = 200
WORKERS = 4


def _drain_all(queue: str) -> list:
    messages, empty = [], 0
    while empty < 2:  # a receive returns at most 32
        batch = drain(AZURITE_CONNECTION_STRING, queue)
        messages += batch
        empty = empty + 1 if not batch else 0
    return messages


def _deliver_twice(functions, name: str, messages: list) -> list[str]:
    """Every message twice, shuffled, to WORKERS concurrent invocations of the handler."""
    deliveries = messages * 2
    random.Random(7).shuffle(deliveries)
    handler = user_function(functions, name)
    with ThreadPoolExecutor(WORKERS) as pool:
        return [f.result() for f in [pool.submit(handler, m) for m in deliveries]]


@pytest.mark.scenario(
    'Planner timer fired twice at once; 4 archiver and 4 dropper workers on a 200-chunk Azurite '
    'queue, every message delivered twice: 200 jobs, 200 distinct message ids, each chunk archived '
    'once (one Delta commit) and dropped once')
def test_two_timers_four_workers_every_message_twice(monkeypatch, pg_dsn, tmp_path):
    first_day = datetime(2020, 1, 1, tzinfo=UTC)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)")
        for day in range(CHUNKS):
            start, end = first_day + timedelta(days=day), first_day + timedelta(days=day + 1)
            conn.execute(f"CREATE TABLE events_{day:03d} PARTITION OF events FOR VALUES FROM ('{start.isoformat()}') "
                         f"TO ('{end.isoformat()}')")
        conn.execute("INSERT INTO events SELECT '2020-01-01'::timestamptz + i * interval '1 hour', i "
                     f"FROM generate_series(0, {CHUNKS * 24 - 1}) i")
    names = queue_names(monkeypatch)
    lake = tmp_path / "lake"
    for key, value in {"ArchiverQueueStorage": AZURITE_CONNECTION_STRING, "ARCHIVER_DATABASE_URL": pg_dsn,
                       "ARCHIVER_LAKE_URL": lake.as_uri(), "ARCHIVER_PARTITIONED_TABLES": "public.events"}.items():
        monkeypatch.setenv(key, value)
    functions = load_app(monkeypatch, "storagequeue")

    planner = user_function(functions, "planner")
    barrier = threading.Barrier(2)

    def fire() -> None:
        barrier.wait()
        planner(TimerRequest(past_due=False))

    timers = [threading.Thread(target=fire) for _ in range(2)]
    for timer in timers:
        timer.start()
    for timer in timers:
        timer.join()
    requests = _drain_all(names["ARCHIVER_REQUESTS_QUEUE"])
    parsed = [ArchiveRequest.model_validate(json.loads(m.get_body())) for m in requests]
    assert len(ledger_jobs(pg_dsn)) == CHUNKS  # no duplicate jobs
    assert len({r.job_id for r in parsed}) == CHUNKS
    # Service Bus drops a message whose id it saw in its duplicate-detection window: what survives is one per chunk
    assert len({r.message_id for r in parsed}) == CHUNKS and len(parsed) == CHUNKS

    outcomes = _deliver_twice(functions, "archiver", requests)
    assert len(outcomes) == 2 * CHUNKS
    confirmations = _drain_all(names["ARCHIVER_CONFIRMATIONS_QUEUE"])
    assert confirmations and all(json.loads(m.get_body())["status"] == "archived" for m in confirmations)
    _deliver_twice(functions, "dropper", confirmations)

    jobs = ledger_jobs(pg_dsn)
    states = sorted({(str(j.state), j.attempts) for j in jobs})
    assert len(jobs) == CHUNKS and states == [("dropped", 1)], states
    (table_dir,) = [p.parent for p in lake.glob("*/_delta_log")]
    assert DeltaTable(str(table_dir)).version() == CHUNKS - 1  # one commit per chunk (the first also creates it)
    assert DeltaTable(str(table_dir)).to_pyarrow_table().num_rows == CHUNKS * 24
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        left = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass").fetchone()[0]
        assert left == 0
