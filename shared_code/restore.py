"""Restore archived rows from the lake, and prove them: one job into a new table, or a table's time range anywhere.

The lake is untrusted: every file must match the SHA-256 the ledger recorded, the manifest must match its recorded
SHA-256, and column types come from the ledger (or, for old jobs, are checked to be type names). Rows go in through a
staging table (COPY, or bound inserts where the server has no COPY FROM STDIN), then into the target in one
transaction per chunk that holds writers off the target, and commits only if the rows read back from the target
(as the archive's Arrow types) add exactly the archive's count and row hash (row_hash.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import catalog, db
from .engine import Engine
from .errors import ArchiverError, JobStateError, VerificationError, render_error
from .extract import query_batches
from .lake import offline_summary
from .ledger import Job, JobState
from .manifest import Manifest
from .results import rehydrate_command
from .typemap import plan_columns, quote_ident, text_companion

if TYPE_CHECKING:
    import pyarrow as pa

    from .row_hash import RowSetHash

log = logging.getLogger("tsarchive")

RESTORE_SCHEMA = "archiver_restore"
COMMENT_PREFIX = "tsarchive restore"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
Progress = Callable[[str, dict[str, Any]], None]
_READBACK_BATCH = 4 << 20  # bytes per Arrow batch read back for the proof: memory stays flat whatever the chunk size


class RestoreRefused(ArchiverError):
    """The restore would put in rows the target already holds, or cannot put them where asked."""


@dataclass
class RestoreResult:
    """`tsarchive restore JOB`: one job into a new table."""

    job_id: int
    target: str
    rows: int
    verified: bool
    content_hash: str
    expected_hash: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChunkRestore:
    job_id: int
    chunk: str
    rows: int
    bytes: int
    status: str  # restored | planned | present | empty
    row_hash: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RangeRestoreResult:
    """`tsarchive restore --hypertable T --from --to`: what went where, with each chunk's proof."""

    table: str
    target: str
    range_from: str | None
    range_to: str | None
    dry_run: bool
    created_target: bool = False
    chunks: list[ChunkRestore] = field(default_factory=list)
    seconds: float = 0.0
    must_rehydrate: dict[str, Any] | None = None  # offline files the range needs: {files, bytes, command}

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks if c.status in ("restored", "planned", "offline"))

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "chunks"}
        out["rows"] = self.rows
        out["chunks"] = [c.as_dict() for c in self.chunks]
        return out


# -- the time filter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeFilter:
    """Rows whose time column is in [low, high), in the column's stored units (micros, days or integers)."""

    column: str
    pg_type: str  # format_type() of the time column
    low: int | None = None
    high: int | None = None

    @classmethod
    def for_range(cls, column: str, pg_type: str, start: datetime | int | None, end: datetime | int | None) -> TimeFilter:
        return cls(column, pg_type, _units(pg_type, start), _units(pg_type, end))

    def narrowed(self, start: datetime | int | None, end: datetime | int | None) -> TimeFilter:
        """The intersection with a chunk's range."""
        low, high = _units(self.pg_type, start), _units(self.pg_type, end)
        return TimeFilter(self.column, self.pg_type,
                          low if self.low is None else self.low if low is None else max(low, self.low),
                          high if self.high is None else self.high if high is None else min(high, self.high))

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.low is None and self.high is None:
            return batch
        column = batch.column(self.column)
        if pa.types.is_timestamp(column.type):
            column = column.view(pa.int64())
        elif pa.types.is_date32(column.type):
            column = column.view(pa.int32())
        mask = None
        for bound, test in ((self.low, pc.greater_equal), (self.high, pc.less)):
            if bound is not None:
                part = test(column, pa.scalar(bound, column.type))
                mask = part if mask is None else pc.and_(mask, part)
        return batch.filter(mask)

    def where(self) -> str:
        """The same filter as SQL, from the integers above (nothing user-typed reaches the text)."""
        ident = quote_ident(self.column)
        clauses = [f"{ident} {op} {self._literal(bound)}" for bound, op in ((self.low, ">="), (self.high, "<"))
                   if bound is not None]
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def _literal(self, units: int) -> str:
        if self.pg_type in _INTEGER_TYPES:
            return str(int(units))
        if self.pg_type == "date":
            return f"'{(_EPOCH.date() + timedelta(days=units)).isoformat()}'::date"
        instant = _EPOCH + timedelta(microseconds=units)
        if self.pg_type.endswith("with time zone"):
            return f"'{instant.isoformat()}'::timestamptz"
        return f"'{instant.replace(tzinfo=None).isoformat()}'::timestamp"  # the wall clock, read as UTC like the archive


def _units(pg_type: str, value: datetime | int | None) -> int | None:
    if value is None:
        return None
    if pg_type in _INTEGER_TYPES:
        if not isinstance(value, int):
            raise ArchiverError(f"the time column is {pg_type}: --from and --to must be integers")
        return value
    if isinstance(value, int) or not isinstance(value, datetime):
        raise ArchiverError(f"the time column is {pg_type}: --from and --to must be ISO 8601 timestamps")
    micros = (value.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    if pg_type == "date":
        return -((-micros) // 86_400_000_000)  # a date is in range when its midnight is: round up to whole days
    return micros


def parse_bound(text: str | None, name: str) -> datetime | int | None:
    """--from/--to: an ISO 8601 timestamp (UTC unless it says otherwise), or an integer for integer time columns."""
    if text is None or text == "":
        return None
    if re.fullmatch(r"-?\d{1,19}", text.strip()):
        return int(text)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ArchiverError(f"{name} {text!r} is not an ISO 8601 timestamp (e.g. 2024-01-01T00:00:00Z) "
                            "or an integer") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- what the lake holds --------------------------------------------------------------------------


def _trusted_manifest(engine: Engine, job: Job) -> tuple[Manifest, list[dict[str, str]]]:
    """The job's manifest and the columns to create, never trusting the lake.

    The manifest must be byte for byte the one the archive wrote (its SHA-256 is in the ledger), and the column
    types come from the ledger, which recorded them from the catalog. Jobs archived before the ledger kept them
    fall back to the manifest's types, each accepted only if this database parses it as a type name.
    """
    assert job.manifest_path is not None
    raw = engine.lake.read_bytes(job.manifest_path)
    if job.manifest_sha256 and hashlib.sha256(raw).hexdigest() != job.manifest_sha256:
        raise VerificationError(
            f"the manifest {job.manifest_path} is not the one written when job {job.id} was archived (its SHA-256 "
            "differs from the ledger's): someone changed it in the lake. Not restoring; nothing was run.")
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError) as error:
        raise VerificationError(f"the manifest {job.manifest_path} is unreadable ({error}); not restoring") from None
    if job.columns:
        return manifest, [{"name": str(c["name"]), "pg_type": str(c["pg_type"])} for c in job.columns]
    columns = []
    for column in manifest.columns:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise VerificationError(f"the manifest {job.manifest_path} lists a malformed column; not restoring")
        try:
            pg_type = catalog.checked_type(engine.conn, column.get("pg_type"))
        except ArchiverError as error:
            raise VerificationError(f"the manifest {job.manifest_path}, column {column['name']!r}: {error}. "
                                    "Not restoring; nothing was run.") from None
        columns.append({"name": column["name"], "pg_type": pg_type})
    return manifest, columns


def _checked(engine: Engine, job: Job) -> tuple[Manifest, list[dict[str, str]]]:
    """The job's manifest and trusted columns, after its files were checked against the ledger's SHA-256s."""
    if job.state not in (JobState.ARCHIVED, JobState.DROPPED) or not job.manifest_path:
        raise JobStateError(f"job {job.id} is {job.state}; only archived or dropped jobs can be restored")
    offline = engine.lake.offline([*job.lake_paths, job.manifest_path])
    if offline:
        raise RestoreRefused(f"the archive of job {job.id} ({job.chunk_name}) is not online: {offline_summary(offline)}. "
                             f"Bring it back with: {rehydrate_command(job.table, job.range_start, job.range_end)}")
    problems = engine.check_archive(job)
    if problems:
        raise VerificationError(f"the archive of job {job.id} ({job.chunk_name}) fails its check, not restoring: "
                                f"{'; '.join(problems)}")
    return _trusted_manifest(engine, job)


def _lake_companions(engine: Engine, job: Job, names: list[str]) -> set[str]:
    """Array columns whose exact text the archive kept beside them (their companion is in the files)."""
    import pyarrow.parquet as pq

    present: set[str] = set()
    for path in job.lake_paths:
        with engine.lake.open_read(path) as handle:
            present.update(pq.ParquetFile(handle).schema_arrow.names)
    return {n for n in names if text_companion(n, names) in present}


def _lake_batches(engine: Engine, job: Job, rows: TimeFilter | None, columns: list[str] | None = None
                  ) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    for path in job.lake_paths:
        with engine.lake.open_read(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536, columns=columns):
                batch = rows.apply(batch) if rows else batch
                if batch.num_rows:
                    yield batch


# -- staging: lake rows into a loose table the server can cast from ----------------------------------


def _flag(name: str) -> str:
    return f"__tsarchive_inf_{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _prepare(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Arrow batch -> what ADBC can load: extension types to storage, infinity sentinels to flags + NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, names = [], []
    for field_, column in zip(batch.schema, batch.columns, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        if pa.types.is_timestamp(column.type) or pa.types.is_date32(column.type):
            is_date = pa.types.is_date32(column.type)
            storage = pa.int32() if is_date else pa.int64()
            top = 2_147_483_647 if is_date else 9_223_372_036_854_775_807
            raw = column.view(storage)
            flags = pc.if_else(pc.equal(raw, top), 1, pc.if_else(pc.equal(raw, -top), -1, 0)).cast(pa.int16())
            column = pc.if_else(pc.not_equal(flags, 0), pa.scalar(None, column.type), column)
            arrays.append(flags)
            names.append(_flag(field_.name))
        arrays.append(column)
        names.append(field_.name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _stage_type(kind: pa.DataType) -> str:
    """The column type a staged Arrow type loads into (what ADBC's own ingest would create)."""
    import pyarrow as pa

    simple = [(pa.types.is_boolean, "boolean"), (pa.types.is_int8, "smallint"), (pa.types.is_int16, "smallint"),
              (pa.types.is_int32, "integer"), (pa.types.is_int64, "bigint"), (pa.types.is_float32, "real"),
              (pa.types.is_float64, "double precision"), (pa.types.is_string, "text"),
              (pa.types.is_large_string, "text"), (pa.types.is_binary, "bytea"), (pa.types.is_large_binary, "bytea"),
              (pa.types.is_date32, "date")]
    for test, name in simple:
        if test(kind):
            return name
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision},{kind.scale})"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _stage_type(kind.value_type) + "[]"
    raise ArchiverError(f"cannot stage Arrow type {kind} for restore")


def _stage(engine: Engine, cursor: Any, batches: Iterator[pa.RecordBatch], stage: str, hashed: RowSetHash,
           progress: Progress, job: Job) -> dict[str, str]:
    """Load the lake's rows into a staging table, hashing them on the way; the staged columns' types."""
    import pyarrow as pa

    first = next(batches, None)
    if first is None:
        return {}

    def counted() -> Iterator[pa.RecordBatch]:
        for batch in _chain(first, batches):
            hashed.update(batch)
            progress("rows", {"job_id": job.id, "rows": batch.num_rows})
            yield _prepare(batch)

    prepared = counted()
    head = next(prepared)
    rel = db.relation_sql(RESTORE_SCHEMA, stage)
    if engine.serial:
        # The WASM build has no COPY FROM STDIN: create the table and bind the rows as prepared-statement parameters.
        cursor.execute(f"CREATE UNLOGGED TABLE {rel} ("
                       + ", ".join(f"{quote_ident(f.name)} {_stage_type(f.type)}" for f in head.schema) + ")")
        insert = f"INSERT INTO {rel} VALUES ({', '.join(f'${i + 1}' for i in range(head.num_columns))})"
        for batch in _chain(head, prepared):
            cursor.executemany(insert, batch)
    else:
        reader = pa.RecordBatchReader.from_batches(head.schema, _chain(head, prepared))
        cursor.adbc_ingest(stage, reader, mode="create", db_schema_name=RESTORE_SCHEMA, temporary=False)
    literal = "'" + rel.replace("'", "''") + "'"
    cursor.execute("SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                   f"WHERE a.attrelid = {literal}::regclass AND a.attnum > 0 AND NOT a.attisdropped")
    return {name: re.sub(r"\(.*\)", "", display) for name, display in cursor.fetchall()}


def _select_expr(column: dict[str, str], staged: dict[str, str], names: list[str]) -> str:
    """The staged column cast back to its recorded type: infinity flags, exact array text, uuid bytes."""
    name, pg_type = column["name"], column["pg_type"]
    if name not in staged:
        return f"NULL::{pg_type}"
    ident = "s." + quote_ident(name)
    staged_type = staged[name]
    if pg_type == "uuid" and staged_type == "bytea":
        expression = f"CASE WHEN {ident} IS NULL THEN NULL ELSE encode({ident}, 'hex')::uuid END"
    elif _flag(name) in staged:
        flag = "s." + quote_ident(_flag(name))
        expression = (f"CASE WHEN {flag} = 1 THEN 'infinity'::{pg_type} WHEN {flag} = -1 THEN '-infinity'::{pg_type} "
                      f"ELSE {ident}::{pg_type} END")
    elif staged_type.endswith("[]") and staged_type != pg_type:
        expression = f"{ident}::text::{pg_type}"  # element types archived as text parse back through the array literal
    else:
        expression = f"{ident}::{pg_type}"
    companion = text_companion(name, names)
    if companion in staged:  # arrays of several dimensions or other bounds come back from their exact text
        text = "s." + quote_ident(companion)
        expression = f"CASE WHEN {text} IS NOT NULL THEN {text}::{pg_type} ELSE {expression} END"
    return expression


# -- the proof: read the target back as the archive's Arrow types -------------------------------------


def _readback_plans(engine: Engine, schema: str, name: str, columns: list[dict[str, str]], companions: set[str]):
    import dataclasses

    wanted = {c["name"] for c in columns}
    source = [c for c in catalog.source_columns(engine.conn, schema, name) if c.name in wanted]
    names = [c["name"] for c in columns]
    plans = plan_columns(source, unsupported_as_text=True)  # what was archived as text reads back as text
    return [dataclasses.replace(p, text_companion=text_companion(p.name, names)) if p.name in companions else p
            for p in plans]


def _target_hash(cursor: Any, rel: str, plans, rows: TimeFilter | None, words: list | None = None) -> RowSetHash:
    from .row_hash import RowSetHash

    hashed = RowSetHash()
    for batch in query_batches(cursor, rel, plans, rows.where() if rows else "", batch_size_bytes=_READBACK_BATCH):
        hashed.update(batch)
        if words is not None:
            words.append(hashed.row_words(batch))
    return hashed


def _count_present(engine: Engine, job: Job, rows: TimeFilter | None, held: list) -> tuple[int, int]:
    """(lake rows whose row hash the target holds, lake rows) for one job; `held` are the target's row words."""
    import numpy as np

    from .row_hash import RowSetHash

    existing = np.concatenate(held) if held else np.zeros(0, dtype=np.uint64)
    found = total = 0
    for batch in _lake_batches(engine, job, rows):
        if len(existing):
            found += int(np.isin(RowSetHash().row_words(batch), existing).sum())
        total += batch.num_rows
    return found, total


# -- one chunk into one table ------------------------------------------------------------------------


def _restore_chunk(engine: Engine, job: Job, columns: list[dict[str, str]], target: tuple[str, str],
                   rows: TimeFilter | None, *, allow_duplicates: bool, progress: Progress) -> ChunkRestore:
    """Stage the chunk's rows, then in one transaction: lock the target, insert, read back, compare, commit."""
    from .row_hash import RowSetHash

    started = time.monotonic()
    rel = db.relation_sql(*target)
    stage = f"__stage_{job.id}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}_{int(time.time() * 1000) % 10**9}"
    lake_hash = RowSetHash()
    names = [c["name"] for c in columns]
    db.ensure_schema(engine.conn, RESTORE_SCHEMA)
    with engine.extractor.connection() as conn:
        cursor = conn.cursor()
        try:
            staged = _stage(engine, cursor, _lake_batches(engine, job, rows), stage, lake_hash, progress, job)
            if not lake_hash.rows:
                return ChunkRestore(job.id, job.chunk_name, 0, 0, "empty", lake_hash.hexdigest,
                                    time.monotonic() - started)
            companions = {n for n in names if text_companion(n, names) in staged}
            plans = _readback_plans(engine, *target, columns, companions)
            chunk_rows = rows.narrowed(job.range_start, job.range_end) if rows else None
            exprs = ", ".join(_select_expr(c, staged, names) for c in columns)
            cursor.execute("BEGIN")
            try:
                cursor.execute(f"SET LOCAL lock_timeout = '{int(engine.settings.lock_timeout_ms)}ms'")
                cursor.execute(f"LOCK TABLE {rel} IN SHARE ROW EXCLUSIVE MODE")  # writers wait; readers go on
                held: list = []
                before = _target_hash(cursor, rel, plans, chunk_rows, held)
                if before.rows and not allow_duplicates:
                    found, _ = _count_present(engine, job, rows, held)
                    if found:
                        raise RestoreRefused(
                            f"{target[0]}.{target[1]} already holds {found} of the {lake_hash.rows} archived rows of "
                            f"{job.chunk_name} (job {job.id}): the chunk is still there, or was restored before. Not "
                            "restoring it; pass --allow-duplicates to insert them anyway.")
                cursor.execute(f"INSERT INTO {rel} ({', '.join(quote_ident(n) for n in names)}) "
                               f"SELECT {exprs} FROM {db.relation_sql(RESTORE_SCHEMA, stage)} s")
                after = _target_hash(cursor, rel, plans, chunk_rows)
                added = after - before
                if added != lake_hash:
                    raise VerificationError(
                        f"chunk {job.chunk_name} (job {job.id}): the rows restored into {target[0]}.{target[1]} differ "
                        f"from the archive ({added.rows} rows, hash {added.hexdigest}; archived {lake_hash.rows} "
                        f"rows, hash {lake_hash.hexdigest}). Rolled back: nothing of this chunk was kept.")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {db.relation_sql(RESTORE_SCHEMA, stage)}")
            cursor.close()
    return ChunkRestore(job.id, job.chunk_name, lake_hash.rows, job.byte_count or 0, "restored", lake_hash.hexdigest,
                        time.monotonic() - started)


def _chain(first, rest):
    yield first
    yield from rest


# -- tsarchive restore JOB ------------------------------------------------------------------------------


def default_target(manifest: Manifest) -> tuple[str, str]:
    name = f"{manifest.table_name}__{manifest.chunk_name.lstrip('_')}"
    return RESTORE_SCHEMA, name[:63]


def _split_target(target: str, option: str = "--target") -> tuple[str, str]:
    schema, dot, name = target.partition(".")
    if not dot or not schema or not name or len(schema) > 63 or len(name) > 63:
        raise ArchiverError(f"{option} {target!r}: expected schema.table")
    return schema, name


def _create_table(engine: Engine, schema: str, name: str, columns: list[dict[str, str]], comment: str) -> None:
    definition = ", ".join(f"{quote_ident(c['name'])} {c['pg_type']}" for c in columns)
    conn = engine.conn
    db.ensure_schema(conn, schema)
    with conn.transaction():
        conn.execute(f"CREATE TABLE {db.relation_sql(schema, name)} ({definition})")
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(db.relation(schema, name), sql.Literal(comment)))


def _made_by_restore(engine: Engine, schema: str, name: str) -> bool:
    row = engine.conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (db.relation_sql(schema, name),)).fetchone()
    return bool(row and str(row[0] or "").startswith(COMMENT_PREFIX))


def _guarded(what: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except (ArchiverError, psycopg.Error):
        raise
    except Exception as error:  # noqa: BLE001 - lake, Parquet and ADBC errors become one readable message
        raise ArchiverError(f"{what} failed: {render_error(error)}") from None


def restore(engine: Engine, job_id: int, target: str | None = None, replace: bool = False,
            progress: Progress | None = None) -> RestoreResult:
    """Restore one job's rows into a new table; publish it only once its rows are proven equal to the archive."""
    return _guarded(f"restore of job {job_id}", lambda: _restore_job(engine, job_id, target, replace, progress))


def _restore_job(engine: Engine, job_id: int, target: str | None, replace: bool,
                 progress: Progress | None) -> RestoreResult:
    started = time.monotonic()
    engine.init()
    job = engine.ledger.get(job_id)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist; `tsarchive jobs --state dropped` lists restorable jobs")
    manifest, columns = _checked(engine, job)
    schema, name = _split_target(target) if target else default_target(manifest)
    if catalog.relation_exists(engine.conn, schema, name):
        if not replace:
            raise ArchiverError(f"{schema}.{name} already exists; pass --replace to overwrite it or --target to choose another")
        if not _made_by_restore(engine, schema, name):
            raise ArchiverError(f"{schema}.{name} was not created by `tsarchive restore`; --replace only overwrites "
                                "tables restore created. Choose another --target.")
    loading = f"{name[:40]}__loading_{job_id}"
    engine.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
    comment = f"{COMMENT_PREFIX} of job {job_id} ({manifest.chunk_schema}.{manifest.chunk_name})"
    _create_table(engine, schema, loading, columns, comment)
    try:
        outcome = _restore_chunk(engine, job, columns, (schema, loading), None, allow_duplicates=False,
                                 progress=progress or (lambda *_: None))
    except BaseException:
        engine.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
        raise
    with engine.conn.transaction():  # publish: the old table (if replacing) and the new one swap atomically
        engine.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, name)))
        engine.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(db.relation(schema, loading), sql.Identifier(name)))
    return RestoreResult(job_id=job_id, target=f"{schema}.{name}", rows=outcome.rows, verified=True,
                         content_hash=outcome.row_hash, expected_hash=manifest.content_hash,
                         seconds=time.monotonic() - started)


# -- tsarchive restore --hypertable T --from A --to B -----------------------------------------------------


def _range_name(table: str, start: datetime | int | None, end: datetime | int | None) -> str:
    def part(value: datetime | int | None) -> str:
        if value is None:
            return "open"
        if isinstance(value, int):
            return str(value).replace("-", "m")
        value = value.astimezone(UTC)
        return value.strftime("%Y%m%d" if value.time() == datetime.min.time() else "%Y%m%d_%H%M%S")

    return f"{table.split('.', 1)[1]}__{part(start)}_{part(end)}"[:63]


def _overlaps(job: Job, start: datetime | int | None, end: datetime | int | None) -> bool:
    lo, hi = job.range_start, job.range_end
    if isinstance(start, datetime) and isinstance(lo, int) or isinstance(start, int) and isinstance(lo, datetime):
        raise ArchiverError(f"{job.table} is partitioned by {'an integer' if isinstance(lo, int) else 'a time'} "
                            "column: give --from/--to as " + ("integers" if isinstance(lo, int) else "timestamps"))
    return (end is None or lo is None or lo < end) and (start is None or hi is None or hi > start)  # type: ignore[operator]


def restore_range(engine: Engine, table: str, start: datetime | int | None, end: datetime | int | None, *,
                  into: str | None = None, dry_run: bool = False, allow_duplicates: bool = False,
                  skip_present: bool = False, progress: Progress | None = None) -> RangeRestoreResult:
    """Every archived row of `table` whose time is in [start, end), into `into` (or a new staging table), proven."""
    return _guarded(f"restore of {table}", lambda: _restore_range(
        engine, table, start, end, into, dry_run, allow_duplicates, skip_present, progress or (lambda *_: None)))


def _restore_range(engine: Engine, table: str, start: datetime | int | None, end: datetime | int | None,
                   into: str | None, dry_run: bool, allow_duplicates: bool, skip_present: bool,
                   progress: Progress) -> RangeRestoreResult:
    started = time.monotonic()
    engine.init()
    if start is not None and end is not None and type(start) is type(end) and start >= end:  # type: ignore[operator]
        raise ArchiverError("--from must be before --to")
    source = _split_target(table, "--hypertable")
    jobs = _jobs_for(engine, table, start, end)
    try:
        time_name, time_type = catalog.time_column(engine.conn, str(jobs[0].kind), *source)
    except (ArchiverError, psycopg.Error):
        raise ArchiverError(f"cannot find the time column of {table}: a range restore reads it from the table. If the "
                            "table is gone, restore each job with `tsarchive restore JOB`.") from None
    rows = TimeFilter.for_range(time_name, time_type, start, end)
    jobs = [j for j in jobs if not rows.narrowed(j.range_start, j.range_end).empty]
    offline = {job.id: engine.lake.offline([*job.lake_paths, *([job.manifest_path] if job.manifest_path else [])])
               for job in jobs}
    if any(offline.values()):  # before anything is read or written: nothing can be proven from files not online
        files = [f for found in offline.values() for f in found]
        command = rehydrate_command(table, start, end)
        if not dry_run:
            raise RestoreRefused(f"{offline_summary(files)}: {table} in [{_iso(start)}, {_iso(end)}) needs them "
                                 f"online; nothing was restored. Bring them back with: {command} (up to 15 hours at "
                                 "standard priority), then run this restore again")
        result = RangeRestoreResult(table=table, target=into or "", dry_run=True, range_from=_iso(start),
                                    range_to=_iso(end), must_rehydrate={"files": len(files),
                                                                        "bytes": sum(f.bytes for f in files),
                                                                        "command": command})
        for job in jobs:
            result.chunks.append(ChunkRestore(job.id, job.chunk_name, job.row_count or 0, job.byte_count or 0,
                                              "offline" if offline[job.id] else "planned"))
        result.seconds = time.monotonic() - started
        return result
    checked = [(job, _checked(engine, job)[1]) for job in jobs]  # every file's SHA-256 and the manifest, before anything
    columns = _union_columns(checked)
    schema, name = _split_target(into, "--into") if into else (RESTORE_SCHEMA, _range_name(table, start, end))
    exists = catalog.relation_exists(engine.conn, schema, name)
    result = RangeRestoreResult(table=table, target=f"{schema}.{name}", dry_run=dry_run,
                                range_from=_iso(start), range_to=_iso(end), created_target=not exists)
    if exists:
        if not into and not _made_by_restore(engine, schema, name):
            raise RestoreRefused(f"{schema}.{name} exists and was not created by `tsarchive restore`; pass --into")
        _check_target_columns(engine, schema, name, columns)
    if dry_run:
        for job, _ in checked:
            count = sum(b.num_rows for b in _lake_batches(engine, job, rows, [time_name]))
            result.chunks.append(ChunkRestore(job.id, job.chunk_name, count, job.byte_count or 0, "planned"))
        result.seconds = time.monotonic() - started
        return result
    skip: set[int] = set()
    if exists and not allow_duplicates:
        skip = _refuse_duplicates(engine, schema, name, checked, rows, skip_present)
    if not exists:
        _create_table(engine, schema, name, columns, f"{COMMENT_PREFIX} of {table} [{_iso(start)}, {_iso(end)})")
    for job, job_columns in checked:
        if job.id in skip:
            result.chunks.append(ChunkRestore(job.id, job.chunk_name, 0, 0, "present"))
            continue
        progress("chunk", {"job_id": job.id, "chunk": job.chunk_name, "rows": job.row_count or 0})
        outcome = _restore_chunk(engine, job, job_columns, (schema, name), rows, allow_duplicates=allow_duplicates,
                                 progress=progress)
        result.chunks.append(outcome)
        progress("chunk_done", outcome.as_dict())
        log.info("restore %s: %s %s rows of %s (job %s) into %s.%s in %.2f s, row hash %s", table, outcome.status,
                 outcome.rows, job.chunk_name, job.id, schema, name, outcome.seconds, outcome.row_hash)
    result.seconds = time.monotonic() - started
    return result


def restore_estimate(engine: Engine, table: str, start: datetime | int | None, end: datetime | int | None
                     ) -> dict[str, Any]:
    """What a restore of [start, end) would touch, from the ledger alone (no file is read): fast enough for an HTTP
    answer at any range. Rows are exact for chunks wholly inside the range, an upper bound for the two at its ends;
    `tsarchive restore --dry-run` (or the queued restore itself) checks every file and counts exactly."""
    engine.init()
    jobs = _jobs_for(engine, table, start, end)
    chunks = []
    for job in jobs:
        inside = (start is None or (job.range_start is not None and job.range_start >= start)) and \
                 (end is None or (job.range_end is not None and job.range_end <= end))  # type: ignore[operator]
        chunks.append({"job_id": job.id, "chunk": job.chunk_name, "rows": job.row_count or 0,
                       "rows_exact": bool(inside), "bytes": job.byte_count or 0, "state": str(job.state)})
    return {"table": table, "range_from": _iso(start), "range_to": _iso(end), "dry_run": True, "estimate": True,
            "chunks": chunks, "rows_at_most": sum(c["rows"] for c in chunks),
            "bytes": sum(c["bytes"] for c in chunks),
            "note": "from the ledger; files are checked and rows counted exactly when the restore runs"}


def _iso(value: datetime | int | None) -> str | None:
    return None if value is None else str(value) if isinstance(value, int) else value.isoformat()


def _jobs_for(engine: Engine, table: str, start: datetime | int | None, end: datetime | int | None) -> list[Job]:
    jobs = engine.ledger.restorable(table)
    if not jobs:
        known = sorted({j.table for j in engine.ledger.jobs(["archived", "dropped"], limit=1000)})
        raise ArchiverError(f"nothing of {table!r} is archived" + (f"; archived tables: {', '.join(known)}" if known else ""))
    chosen = [j for j in jobs if _overlaps(j, start, end)]
    if not chosen:
        raise ArchiverError(f"no archived chunk of {table} overlaps [{_iso(start)}, {_iso(end)}); "
                            "`tsarchive jobs --state dropped` lists what is archived")
    return chosen


def _union_columns(checked: list[tuple[Job, list[dict[str, str]]]]) -> list[dict[str, str]]:
    """Every archived column, in order; a column whose type changed between chunks cannot share one table."""
    out: dict[str, str] = {}
    for job, columns in checked:
        for column in columns:
            known = out.setdefault(column["name"], column["pg_type"])
            if known != column["pg_type"]:
                raise RestoreRefused(f"column {column['name']!r} was archived as {known} and, in job {job.id}, as "
                                     f"{column['pg_type']}: restore a narrower range, or per job")
    return [{"name": n, "pg_type": t} for n, t in out.items()]


def _check_target_columns(engine: Engine, schema: str, name: str, columns: list[dict[str, str]]) -> None:
    have = {c.name: c.type_display for c in catalog.source_columns(engine.conn, schema, name)}
    problems = [f"{c['name']} ({'missing' if c['name'] not in have else have[c['name']] + ', archived as ' + c['pg_type']})"
                for c in columns if have.get(c["name"]) != c["pg_type"]]
    if problems:
        raise RestoreRefused(f"{schema}.{name} cannot take the archived rows: column(s) {'; '.join(problems)}. "
                             "Restore into a new table (omit --into) and copy from there.")


def _refuse_duplicates(engine: Engine, schema: str, name: str, checked: list[tuple[Job, list[dict[str, str]]]],
                       rows: TimeFilter, skip_present: bool) -> set[int]:
    """Before anything is written: refuse if the target holds any archived row; with skip_present, skip whole chunks."""
    rel = db.relation_sql(schema, name)
    full, partial = [], []
    with engine.extractor.connection() as conn:
        cursor = conn.cursor()
        try:
            for job, columns in checked:
                chunk_rows = rows.narrowed(job.range_start, job.range_end)
                cursor.execute(f"SELECT count(*) FROM {rel}{chunk_rows.where()}")
                if not cursor.fetchone()[0]:
                    continue
                names = [c["name"] for c in columns]
                plans = _readback_plans(engine, schema, name, columns, _lake_companions(engine, job, names))
                held: list = []
                _target_hash(cursor, rel, plans, chunk_rows, held)
                found, total = _count_present(engine, job, rows, held)
                if found:
                    (full if found >= total else partial).append((job, found, total))
        finally:
            cursor.close()
    if partial or (full and not skip_present):
        lines = [f"{job.chunk_name} (job {job.id}): {found} of {total} rows" for job, found, total in full + partial]
        hint = " or --skip-present to skip the chunks already wholly there" if full and not partial else ""
        raise RestoreRefused(f"{schema}.{name} already holds archived rows: {'; '.join(lines)}. The chunks are still "
                             "there, or were restored before. Nothing was restored; pass --allow-duplicates to insert "
                             f"them anyway{hint}.")
    return {job.id for job, _, _ in full}



# -- rehydration ----------------------------------------------------------------------------------


def rehydrate_range(engine: Engine, table: str, start: datetime | int | None, end: datetime | int | None, *,
                    tier: str = "Hot", priority: str = "Standard") -> dict[str, Any]:
    """Start bringing back online every file a restore of [start, end) reads: the chunks' data files and manifests,
    and the table's Delta log if a rule took it offline. Idempotent: run again, it counts pending and ready files."""
    engine.init()
    jobs = _jobs_for(engine, table, start, end)
    files = [path for job in jobs for path in [*job.lake_paths, *([job.manifest_path] if job.manifest_path else [])]]
    for table_path in sorted({job.table_path for job in jobs if job.table_path}):
        files += engine.lake.list_files(f"{table_path}/_delta_log")
    counts = {"requested": 0, "pending": 0, "online": 0}  # requested: started now; pending + online = every file
    unique = list(dict.fromkeys(files))
    for path in unique:
        started, online = engine.lake.rehydrate(path, tier, priority)
        counts["requested"] += started
        counts["online" if online else "pending"] += 1
    waiting = counts["pending"]
    return {"table": table, "range_from": _iso(start), "range_to": _iso(end), "tier": tier, "priority": priority,
            "chunks": len(jobs), "files": len(unique), **counts,
            "ready": waiting == 0,
            "note": "every file is online: restore, query and verify can read them" if waiting == 0 else
                    "rehydration takes up to 15 hours at Standard priority (about 1 hour at High); run this again "
                    "to see how many are still pending"}
