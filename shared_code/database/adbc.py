"""Arrow connections to PostgreSQL: ADBC's driver through the driver manager's low-level API.

Not through ADBC's DB-API module: importing it imports `pyarrow.dataset`, and with it pandas and polars wherever they
are installed, 0.3-0.9 s of CPU in every process before the first row moves (docs/performance.md). This is the small
part of that surface the archiver uses: statements, Arrow result streams, bulk ingest and bound inserts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_SIZE_HINT = "adbc.postgresql.batch_size_hint_bytes"


class ArrowConnection:
    """One PostgreSQL session (autocommit unless the SQL says BEGIN), kept open for a worker's life."""

    def __init__(self, uri: str) -> None:
        import adbc_driver_manager as manager
        import adbc_driver_postgresql as driver

        self._database = driver.connect(uri)
        try:
            self._connection = manager.AdbcConnection(self._database)
        except BaseException:
            self._database.close()
            raise
        self._cursors: list[ArrowCursor] = []

    def cursor(self) -> ArrowCursor:
        self._cursors = [c for c in self._cursors if not c.closed]
        self._cursors.append(ArrowCursor(self._connection))
        return self._cursors[-1]

    def close(self) -> None:
        """Close its cursors (ADBC refuses to close a connection with a statement open), then the session."""
        try:
            for cursor in self._cursors:
                cursor.close()
            self._connection.close()
        finally:
            self._database.close()


class ArrowCursor:
    """One statement on a connection: run SQL, read its rows as Arrow, ingest Arrow."""

    def __init__(self, connection: Any) -> None:
        import adbc_driver_manager as manager

        self._statement = manager.AdbcStatement(connection)
        self._handle: Any = None
        self.closed = False

    def set_options(self, **options: str) -> None:
        self._statement.set_options(**options)

    def execute(self, sql: str) -> ArrowCursor:
        """Run one statement; its rows, if any, wait for fetch_record_batch, fetchone or fetchall."""
        self._release()
        self._statement.set_sql_query(sql)
        self._handle, _ = self._statement.execute_query()
        return self

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        """The rows of the last statement, streamed."""
        import pyarrow as pa

        if self._handle is None:
            raise RuntimeError("no result to fetch: execute a query first")
        handle, self._handle = self._handle, None
        return pa.RecordBatchReader._import_from_c(handle.address)

    def fetchall(self) -> list[tuple]:
        table = self.fetch_record_batch().read_all()
        return list(zip(*(column.to_pylist() for column in table.columns), strict=True)) if table.num_columns else []

    def fetchone(self) -> tuple | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def ingest(self, table: str, batch_schema: pa.Schema, batches: Iterator[pa.RecordBatch], *, schema: str,
               create: bool) -> int:
        """Bulk-load a stream of batches (COPY) into `schema.table`, created from the batches' types if `create`.

        An error raised by `batches` itself (a lake file that fails its check, a value that needs staging) is raised
        as it was; ADBC would otherwise hand back its own error with that one's text inside."""
        import pyarrow as pa

        raised: list[BaseException] = []

        def watched() -> Iterator[pa.RecordBatch]:
            try:
                yield from batches
            except Exception as error:
                raised.append(error)
                raise

        try:
            return self._ingest(table, pa.RecordBatchReader.from_batches(batch_schema, watched()), schema, create)
        except Exception:
            if raised:
                raise raised[0] from None
            raise

    def _ingest(self, table: str, data: pa.RecordBatchReader, schema: str, create: bool) -> int:
        import adbc_driver_manager as manager

        self._release()
        self._statement.set_options(**{
            manager.INGEST_OPTION_TARGET_TABLE: table,
            manager.INGEST_OPTION_MODE: manager.INGEST_OPTION_MODE_CREATE if create else manager.INGEST_OPTION_MODE_APPEND,
            manager.StatementOptions.INGEST_TARGET_DB_SCHEMA.value: schema,
        })
        self._statement.bind_stream(data)
        return self._statement.execute_update()

    def executemany(self, sql: str, batch: pa.RecordBatch) -> None:
        """Run a prepared statement once per row of `batch` (bound as its parameters)."""
        self._release()
        self._statement.set_sql_query(sql)
        self._statement.prepare()
        self._statement.bind(batch)
        self._statement.execute_update()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._release()
            finally:
                self._statement.close()

    def _release(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.release()
