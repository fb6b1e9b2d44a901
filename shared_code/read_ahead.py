"""Iterators pumped by worker threads a bounded number of items ahead of their consumer.

What the threads run is Arrow and libpq work that releases the GIL (ADBC decoding, Parquet reading, numpy hashing), so a
producer and its consumer use two cores. At most `depth` items wait, so memory stays bounded whatever the source size.
An error in a producer is raised in the consumer; a consumer that stops early (or fails) stops the producers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class ReadAhead(Generic[T]):
    """Items of every source, each source pumped by its own thread from construction on, in arrival order (a single
    source keeps its order). `close()` (or leaving its `with` block) stops and joins the threads; exhausting it too."""

    def __init__(self, sources: list[Iterable[T]], depth: int, *, name: str = "tsarchive-read-ahead") -> None:
        self._out: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._pump, args=(i, s), name=name, daemon=True)
                         for i, s in enumerate(sources)]
        self._running = len(self._threads)
        for thread in self._threads:
            thread.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self._next()[1]

    def tagged(self) -> Iterator[tuple[int, T]]:
        """The items with the index of the source each came from."""
        while True:
            try:
                yield self._next()
            except StopIteration:
                return

    def _next(self) -> tuple[int, T]:
        while self._running:
            item = self._out.get()
            if item is _DONE:
                self._running -= 1
            elif isinstance(item, BaseException):
                self.close()
                raise item
            else:
                return item
        self.close()
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._running = 0

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: Any) -> bool:
        """Hand an item over unless the consumer has stopped (then never block: it will not read again)."""
        while not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self, index: int, source: Iterable[T]) -> None:
        items = iter(source)
        try:
            for item in items:
                if not self._put((index, item)):
                    return
            self._put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(error)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator source is closed on its own thread (its `with` blocks end here)
                close()
