"""ReadAhead: worker threads a bounded number of items ahead, errors and early stops handed across."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shared_code.read_ahead import ReadAhead


def test_one_source_keeps_its_order_and_several_give_every_item() -> None:
    assert list(ReadAhead([range(1000)], 3)) == list(range(1000))
    merged = list(ReadAhead([range(0, 500), range(500, 1000), iter([])], 2))
    assert sorted(merged) == list(range(1000))


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("lake file unreadable")

    seen = []
    with pytest.raises(ValueError, match="lake file unreadable"):
        for item in ReadAhead([failing()], 4):
            seen.append(item)
    assert seen == [1, 2]


def test_the_producer_runs_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def counting() -> Iterator[int]:
        for n in range(100):
            produced.append(n)
            yield n

    items = ReadAhead([counting()], 3)
    assert next(items) == 0
    time.sleep(0.3)  # ample time for the worker to run as far ahead as the queue lets it
    # taken: 1; waiting in the queue: 3; one more produced and blocked on the full queue
    assert len(produced) <= 1 + 3 + 1
    items.close()


def test_closing_early_stops_the_worker_and_closes_its_source_on_that_thread() -> None:
    closed_on: list[str] = []

    def source() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed_on.append(threading.current_thread().name)

    before = threading.active_count()
    items = ReadAhead([source()], 2, name="test-feed")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed_on == ["test-feed"]  # its `with` blocks ended where they ran
    assert threading.active_count() == before


def test_a_consumer_failing_midway_leaves_no_thread_behind() -> None:
    before = threading.active_count()
    with pytest.raises(RuntimeError), ReadAhead([range(10_000), range(10_000)], 2) as items:
        for item in items:
            if item == 5:
                raise RuntimeError("writer failed")
    assert threading.active_count() == before


def test_it_reads_ahead_before_the_first_item_is_asked_for() -> None:
    started = threading.Event()

    def source() -> Iterator[int]:
        started.set()
        yield 1

    with ReadAhead([source()], 1):
        assert started.wait(5)  # a feed started for the next chunk works while the current one is proven
