"""What a restore is handed (connections, ledger, lake, archive check, nothing more), and how its failures read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg

from ..errors import ArchiverError, render_error
from ..ledger.jobs import Ledger
from ..storage.lake import Lake

Progress = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


@dataclass(frozen=True)
class RestoreContext:
    """The parts a restore is handed (`Engine.restore_context()` builds it, with the ledger migrated)."""

    conn: psycopg.Connection  # catalog reads, DDL on the target, the ledger's own connection
    ledger: Ledger
    lake: Lake
    check_archive: Callable[..., list[str]]  # problems with a job's archive (checksum=False: all but whole-file SHAs)
    row_connection: Callable[[], AbstractContextManager[Any]]  # an ADBC connection for staging and the read-back
    serial: bool  # the server runs one transaction at a time and has no COPY FROM STDIN (the WASM build)
    lock_timeout_ms: int


class HasRestoreContext(Protocol):
    def restore_context(self) -> RestoreContext: ...


def as_context(engine: RestoreContext | HasRestoreContext) -> RestoreContext:
    """The entry points take an engine or a context: an engine hands over its parts."""
    return engine if isinstance(engine, RestoreContext) else engine.restore_context()


def guarded(what: str, action: Callable[[], T]) -> T:
    """Run a restore step; lake, Parquet and ADBC errors become one readable ArchiverError naming `what`."""
    try:
        with system_allocator():
            return action()
    except (ArchiverError, psycopg.Error):
        raise
    except Exception as error:  # noqa: BLE001 - anything else is told once, in words
        raise ArchiverError(f"{what} failed: {render_error(error)}") from None


@contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow's allocations through malloc while a restore runs, then back to the default pool.

    The restore's reader threads each get a jemalloc arena that keeps what it freed: a one-day restore peaked at 291 MiB
    with the default pool and 238 MiB with this one, at the same speed (docs/performance.md)."""
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
