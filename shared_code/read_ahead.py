"""Iterators pumped by worker threads a bounded number of items ahead of their consumer.

What the threads run is Arrow and libpq work that releases the GIL (ADBC decoding, Parquet reading, numpy hashing), so a
producer and its consumer use two cores. At most `depth` items wait, so memory stays bounded whatever the source size.
An error in a producer is raised in the consumer; a consumer that stops early (or fails) stops the producers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(sources: list[Iterable[T]], depth: int, *, name: str = "tsarchive-read-ahead") -> Iterator[T]:
    """Items of every source, each source pumped by its own thread, in arrival order (a single source keeps its order).

    Close the returned generator (or exhaust it) to stop and join the threads; its `finally` does both.
    """
    out: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Hand an item over unless the consumer has stopped (then never block: it will not read again)."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump(source: Iterable[T]) -> None:
        items = iter(source)
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(error)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator source is closed on its own thread (its `with` blocks end here)
                close()

    threads = [threading.Thread(target=pump, args=(s,), name=name, daemon=True) for s in sources]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            item = out.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()
