"""Which archived jobs and files a restore reads, each file proven against the ledger before any row is used.

The lake is untrusted: every file must match the SHA-256 the ledger recorded, the manifest must match its recorded
SHA-256, and column types come from the ledger (or, for old jobs, are checked to be type names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..database import catalog
from ..errors import ArchiverError, JobStateError, RestoreRefused, VerificationError
from ..ledger.jobs import Job, JobState
from ..results import rehydrate_command
from ..storage.blob import OfflineFile, offline_summary
from ..storage.file_parts import VerifiedFile
from ..storage.manifest import Manifest
from ..typemap import text_companion
from .bounds import Bound, TimeFilter, iso, overlaps
from .context import RestoreContext

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

Columns = list[dict[str, str]]  # [{"name": ..., "pg_type": ...}] as recorded when the chunk was archived (PostgreSQL names)


def jobs_for(ctx: RestoreContext, table: str, start: Bound, end: Bound) -> list[Job]:
    """The archived or dropped jobs of `table` whose chunk overlaps [start, end)."""
    jobs = ctx.ledger.restorable(table)
    if not jobs:
        known = sorted({j.table for j in ctx.ledger.jobs(["archived", "dropped"], limit=1000)})
        raise ArchiverError(f"nothing of {table!r} is archived" + (f"; archived tables: {', '.join(known)}" if known else ""))
    chosen = [j for j in jobs if overlaps(j, start, end)]
    if not chosen:
        raise ArchiverError(f"no archived chunk of {table} overlaps [{iso(start)}, {iso(end)}); "
                            "`tsarchive jobs --state dropped` lists what is archived")
    return chosen


def job_files(job: Job) -> list[str]:
    """Every lake file a restore of the job reads: its data files and its manifest."""
    return [*job.lake_paths, *([job.manifest_path] if job.manifest_path else [])]


def offline_files(ctx: RestoreContext, jobs: list[Job]) -> dict[int, list[OfflineFile]]:
    """Per job, the files a lifecycle rule took offline (nothing can be proven from them until rehydrated)."""
    return {job.id: ctx.lake.offline(job_files(job)) for job in jobs}


def refuse_offline(ctx: RestoreContext, job: Job) -> None:
    """Refuse a job whose files a lifecycle rule took offline, naming the command that brings them back."""
    offline = ctx.lake.offline(job_files(job))
    if offline:
        raise RestoreRefused(f"the archive of job {job.id} ({job.chunk_name}) is not online: {offline_summary(offline)}. "
                             f"Bring it back with: {rehydrate_command(job.table, job.range_start, job.range_end)}")


def checked(ctx: RestoreContext, job: Job) -> tuple[Manifest, Columns]:
    """The job's manifest and trusted columns, after its files were checked against the ledger's SHA-256s.

    The caller has already refused offline files (`refuse_offline`, or `offline_files` for a range)."""
    if job.state not in (JobState.ARCHIVED, JobState.DROPPED) or not job.manifest_path:
        raise JobStateError(f"job {job.id} is {job.state}; only archived or dropped jobs can be restored")
    problems = ctx.check_archive(job, checksum=whole_files_checked(job))
    if problems:
        raise VerificationError(f"the archive of job {job.id} ({job.chunk_name}) fails its check, not restoring: "
                                f"{'; '.join(problems)}")
    return _trusted_manifest(ctx, job)


def _trusted_manifest(ctx: RestoreContext, job: Job) -> tuple[Manifest, Columns]:
    """The job's manifest and the columns to create, never trusting the lake.

    The manifest must be byte for byte the one the archive wrote (its SHA-256 is in the ledger), and the column
    types come from the ledger, which recorded them from the catalog. Jobs archived before the ledger kept them
    fall back to the manifest's types, each accepted only if this database parses it as a type name.
    """
    assert job.manifest_path is not None
    raw = ctx.lake.read_bytes(job.manifest_path)
    if job.manifest_sha256 and hashlib.sha256(raw).hexdigest() != job.manifest_sha256:
        raise VerificationError(
            f"the manifest {job.manifest_path} is not the one written when job {job.id} was archived (its SHA-256 "
            "differs from the ledger's): someone changed it in the lake. Not restoring; nothing was run.")
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError) as error:
        raise VerificationError(f"the manifest {job.manifest_path} is unreadable ({error}); not restoring") from None
    if job.columns:  # the ledger's names and types; the lake's names (lake_name) are mapped back in lake_batches
        return manifest, [{"name": str(c["name"]), "pg_type": str(c["pg_type"])} for c in job.columns]
    columns = []
    for column in manifest.columns:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise VerificationError(f"the manifest {job.manifest_path} lists a malformed column; not restoring")
        try:
            pg_type = catalog.checked_type(ctx.conn, column.get("pg_type"))
        except ArchiverError as error:
            raise VerificationError(f"the manifest {job.manifest_path}, column {column['name']!r}: {error}. "
                                    "Not restoring; nothing was run.") from None
        columns.append({"name": column["name"], "pg_type": pg_type})
    return manifest, columns


def union_columns(checked_jobs: list[tuple[Job, Columns]]) -> Columns:
    """Every archived column, in order; a column whose type changed between chunks cannot share one table."""
    out: dict[str, str] = {}
    for job, columns in checked_jobs:
        for column in columns:
            known = out.setdefault(column["name"], column["pg_type"])
            if known != column["pg_type"]:
                raise RestoreRefused(f"column {column['name']!r} was archived as {known} and, in job {job.id}, as "
                                     f"{column['pg_type']}: restore a narrower range, or per job")
    return [{"name": n, "pg_type": t} for n, t in out.items()]


def lake_names(job: Job) -> dict[str, str]:
    """Lake name -> PostgreSQL name of a job's columns and their text companions, where the two differ (the ledger
    records both; a job archived before lake names has none that differ)."""
    recorded = [c for c in job.columns or [] if isinstance(c, dict)]
    names = [str(c["name"]) for c in recorded]
    lake = [str(c.get("lake_name") or c["name"]) for c in recorded]
    out = {}
    for name, stored in zip(names, lake, strict=True):
        if stored != name:
            out[stored] = name
            out[text_companion(stored, lake)] = text_companion(name, names)
    return out


def lake_batches(ctx: RestoreContext, job: Job, rows: TimeFilter | None, columns: list[str] | None = None
                 ) -> Iterator[pa.RecordBatch]:
    """The job's archived rows in [rows), as Arrow batches under their PostgreSQL names, read from its (already
    checked) files; `columns` (PostgreSQL names) narrows the read. Row groups outside the range are not read: their
    statistics sit in the footer, whose SHA-256 the ledger holds (as a part, or within the whole file's)."""

    renames = lake_names(job)
    stored = {name: lake for lake, name in renames.items()}
    wanted = [stored.get(c, c) for c in columns] if columns is not None else None
    for path in job.lake_paths:
        with _opened(ctx, job, path) as (parquet, one_group_at_a_time):
            # only the row groups whose time statistics overlap the range (a day of a week-long chunk: a seventh)
            groups = rows.row_groups(parquet.metadata, stored.get(rows.column, rows.column)) if rows else None
            if groups is None:
                groups = list(range(parquet.metadata.num_row_groups))
            # verified parts: one row group read, checked and decoded at a time (memory: a row group, not a file)
            for chosen in ([[g] for g in groups] if one_group_at_a_time else [groups] if groups else []):
                for batch in parquet.iter_batches(batch_size=65_536, columns=wanted, row_groups=chosen):
                    if renames:
                        batch = batch.rename_columns([renames.get(n, n) for n in batch.schema.names])
                    batch = rows.apply(batch) if rows else batch
                    if batch.num_rows:
                        yield batch


def whole_files_checked(job: Job) -> bool:
    """Whether a restore must hash the job's whole files first: it was archived before the ledger kept each file's
    parts (row groups and footer) with their SHA-256s; with them, only the parts a restore reads are checked, as read."""
    return not job.lake_paths or any(path not in job.file_parts for path in job.lake_paths)


@contextmanager
def _opened(ctx: RestoreContext, job: Job, path: str) -> Iterator[tuple[pq.ParquetFile, bool]]:
    """A lake file for decoding: through its verified parts when the ledger has them (every byte decoded is checked
    against the ledger in the read that fetched it), else as it is (its whole SHA-256 was checked before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = job.file_parts.get(path)
    if not parts:
        with ctx.lake.open_read(path) as handle:
            yield pq.ParquetFile(handle), False
        return
    size = sum(int(p[1]) for p in parts)
    verified = VerifiedFile(path, size, parts, lambda offset, length: ctx.lake.read_range(path, offset, length))
    try:
        metadata = pq.read_metadata(pa.BufferReader(verified.footer()))
    except (OSError, ValueError) as error:
        raise VerificationError(f"{path}: its footer matches the ledger but does not parse ({error})") from None
    with verified:
        yield pq.ParquetFile(verified, metadata=metadata), True


def lake_companions(ctx: RestoreContext, job: Job, names: list[str]) -> set[str]:
    """Array columns (PostgreSQL names) whose exact text the archive kept beside them (their companion is in the files)."""
    import pyarrow.parquet as pq

    renames = lake_names(job)
    present: set[str] = set()
    for path in job.lake_paths:
        with ctx.lake.open_read(path) as handle:
            present.update(renames.get(n, n) for n in pq.ParquetFile(handle).schema_arrow.names)
    return {n for n in names if text_companion(n, names) in present}
