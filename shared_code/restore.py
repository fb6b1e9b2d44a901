"""Restore an archived chunk from the lake into a new table, and check it against what was archived.

The lake is untrusted: the manifest must match the SHA-256 the ledger recorded, and column types come from the
ledger (or, for old jobs, are checked to be type names). The check: every file's SHA-256 before loading, then the
restored row count (and, for archives made before 0.2, the server-side content hash) against the manifest.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from . import db
from .engine import Engine
from .errors import ArchiverError, JobStateError, VerificationError
from .ledger import Job, JobState
from .manifest import Manifest
from .typemap import quote_ident, text_companion

RESTORE_SCHEMA = "archiver_restore"
COMMENT_PREFIX = "tsarchive restore of job"


@dataclass
class RestoreResult:
    job_id: int
    target: str
    rows: int
    verified: bool
    content_hash: str
    expected_hash: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_target(manifest: Manifest) -> tuple[str, str]:
    name = f"{manifest.table_name}__{manifest.chunk_name.lstrip('_')}"
    return RESTORE_SCHEMA, name[:63]


def _split_target(target: str) -> tuple[str, str]:
    schema, dot, name = target.partition(".")
    if not dot or not schema or not name:
        raise ArchiverError(f"--target {target!r}: expected schema.table")
    return schema, name


def _flag(name: str) -> str:
    return f"__tsarchive_inf_{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _prepare(batch, columns: list[dict[str, str]]):
    """Arrow batch -> something ADBC can ingest: extension types to storage, infinity sentinels to flags + NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, names = [], []
    for field, column in zip(batch.schema, batch.columns, strict=True):
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
            names.append(_flag(field.name))
        arrays.append(column)
        names.append(field.name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _select_expr(column: dict[str, str], staged_type: str, has_flag: bool) -> str:
    ident = "s." + quote_ident(column["name"])
    pg_type = column["pg_type"]
    if pg_type == "uuid" and staged_type == "bytea":
        return f"CASE WHEN {ident} IS NULL THEN NULL ELSE encode({ident}, 'hex')::uuid END"
    if has_flag:
        flag = "s." + quote_ident(_flag(column["name"]))
        return (f"CASE WHEN {flag} = 1 THEN 'infinity'::{pg_type} WHEN {flag} = -1 THEN '-infinity'::{pg_type} "
                f"ELSE {ident}::{pg_type} END")
    if staged_type.endswith("[]") and staged_type != pg_type:
        return f"{ident}::text::{pg_type}"  # element types archived as text parse back through the array literal
    return f"{ident}::{pg_type}"


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
            pg_type = db.checked_type(engine.conn, column.get("pg_type"))
        except ArchiverError as error:
            raise VerificationError(f"the manifest {job.manifest_path}, column {column['name']!r}: {error}. "
                                    "Not restoring; nothing was run.") from None
        columns.append({"name": column["name"], "pg_type": pg_type})
    return manifest, columns


def _with_text(column: dict[str, str], staged: dict[str, str], companion: str, expression: str) -> str:
    """Prefer the exact text an array was archived as (several dimensions, or other bounds) where there is one."""
    if companion not in staged:
        return expression
    text = "s." + quote_ident(companion)
    return f"CASE WHEN {text} IS NOT NULL THEN {text}::{column['pg_type']} ELSE {expression} END"


def restore(engine: Engine, job_id: int, target: str | None = None, replace: bool = False) -> RestoreResult:
    """Re-read and check the archive, load it into a new table, verify its content hash, then publish the table."""
    try:
        return _restore(engine, job_id, target, replace)
    except (ArchiverError, psycopg.Error):
        raise
    except Exception as error:  # noqa: BLE001 - lake, Parquet and ADBC errors become one readable message
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ArchiverError(f"restore of job {job_id} failed: {first}") from None


def _restore(engine: Engine, job_id: int, target: str | None, replace: bool) -> RestoreResult:
    started = time.monotonic()
    engine.init()
    job = engine.ledger.get(job_id)
    if job is None:
        raise JobStateError(f"job {job_id} does not exist; `tsarchive jobs --state dropped` lists restorable jobs")
    if job.state not in (JobState.ARCHIVED, JobState.DROPPED) or not job.manifest_path:
        raise JobStateError(f"job {job_id} is {job.state}; only archived or dropped jobs can be restored")
    problems = engine.check_archive(job)
    if problems:
        raise VerificationError(f"the archive of job {job_id} fails its check, not restoring: {'; '.join(problems)}")
    manifest, columns = _trusted_manifest(engine, job)
    schema, name = _split_target(target) if target else default_target(manifest)
    conn = engine.conn
    if db.relation_exists(conn, schema, name):
        if not replace:
            raise ArchiverError(f"{schema}.{name} already exists; pass --replace to overwrite it or --target to choose another")
        comment = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                               (db.relation_sql(schema, name),)).fetchone()
        if not comment or not str(comment[0] or "").startswith(COMMENT_PREFIX):
            raise ArchiverError(f"{schema}.{name} was not created by `tsarchive restore`; --replace only overwrites "
                                "tables restore created. Choose another --target.")
    loading = f"{name[:40]}__loading_{job_id}"
    stage = f"__stage_{job_id}_{int(time.time())}"
    definition = ", ".join(f"{quote_ident(c['name'])} {c['pg_type']}" for c in columns)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
    conn.execute(f"CREATE TABLE {db.relation_sql(schema, loading)} ({definition})")
    try:
        staged = _stage(engine, job.lake_paths, columns, schema, stage)
        if staged:  # an empty chunk restores to an empty table
            names = [c["name"] for c in columns]
            exprs = ", ".join(_with_text(c, staged, text_companion(c["name"], names),
                                         _select_expr(c, staged.get(c["name"], ""), _flag(c["name"]) in staged))
                              for c in columns)
            conn.execute(f"INSERT INTO {db.relation_sql(schema, loading)} SELECT {exprs} "
                         f"FROM {db.relation_sql(schema, stage)} s")
        fp = db.fingerprint(conn, schema, loading, [], [c["name"] for c in columns])
    except BaseException:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, loading)))
        raise
    finally:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, stage)))
    # Archives before 0.2 recorded the server's content hash of the chunk; later ones a digest of their files, whose
    # SHA-256 check_archive verified above, so the restored rows are checked by count.
    legacy = not manifest.content_hash.startswith("sha256:")
    if (fp.token != manifest.content_hash) if legacy else (fp.rows != manifest.rows):
        raise VerificationError(
            f"restored rows of job {job_id} differ from the archive (content hash {fp.token}, archived "
            f"{manifest.content_hash}); they were left in {schema}.{loading} for inspection"
        )
    with conn.transaction():  # publish: the old table (if replacing) and the new one swap atomically
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(db.relation(schema, name)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(db.relation(schema, loading), sql.Identifier(name)))
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
            db.relation(schema, name), sql.Literal(f"{COMMENT_PREFIX} {job_id} ({manifest.chunk_schema}.{manifest.chunk_name})")))
    return RestoreResult(job_id=job_id, target=f"{schema}.{name}", rows=fp.rows, verified=True,
                         content_hash=fp.token if legacy else manifest.content_hash,
                         expected_hash=manifest.content_hash, seconds=time.monotonic() - started)


def _stage(engine: Engine, paths: list[str], columns: list[dict[str, str]], schema: str, stage: str) -> dict[str, str]:
    """Stream the Parquet files into a staging table; return its column types."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa
    import pyarrow.parquet as pq

    def batches() -> Iterator[pa.RecordBatch]:
        for path in paths:
            with engine.lake.open_read(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536):
                    yield _prepare(batch, columns)

    stream = batches()
    first = next(stream, None)
    if first is None:
        return {}
    reader = pa.RecordBatchReader.from_batches(first.schema, _chain(first, stream))
    with adbc.connect(engine.settings.database_dsn(), autocommit=True) as conn, conn.cursor() as cur:
        for setting, value in db.SESSION_SETTINGS.items():
            cur.execute(f"SET {setting} = '{value}'")
        cur.adbc_ingest(stage, reader, mode="create", db_schema_name=schema)
    rows = engine.conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (db.relation_sql(schema, stage),),
    ).fetchall()
    return {attname: re.sub(r"\(.*\)", "", display) for attname, display in rows}


def _chain(first, rest):
    yield first
    yield from rest
