"""Archiving one claimed job: snapshot, extract, write, verify, publish, commit, seal, record.

The engine claims the job and hands this stage what it uses: the catalog connection, the ledger, the lake, the vault,
the extractor, the settings and the clock. Nothing here decides whether a chunk is due or may be dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from datetime import timedelta

import psycopg

from .. import telemetry
from ..database import catalog
from ..database.catalog import ChunkSource
from ..database.extract import ArraysNeedText, Extractor, Snapshot, TimeSlices
from ..errors import ArchiverError, JobStateError, is_terminal, render_error
from ..faults import crash_point
from ..ledger.jobs import Job, JobState, Ledger
from ..results import Clock, Progress, StepResult
from ..settings import Settings
from ..storage.destination import ArchiveDestination
from ..storage.lake import Lake
from ..storage.layout import ChunkLayout, chunk_layout
from ..storage.manifest import PARQUET_KEY, FileEntry, Manifest, archive_digest, new_manifest
from ..storage.partitioning import PartitionSpec
from ..storage.vault import Vault
from ..typemap import ColumnPlan, plan_columns, recorded_columns, schema_fingerprint, text_companion, with_lake_names
from .writer import ChunkFileWriter

log = logging.getLogger("tsarchive")

_first_line = render_error


def retry_delay(settings: Settings, attempts: int) -> timedelta:
    """Exponential backoff from ARCHIVER_RETRY_BACKOFF_SECONDS, capped at one hour."""
    return timedelta(seconds=min(3600, settings.retry_backoff_seconds * 2 ** max(attempts - 1, 0)))


def job_layout(settings: Settings, job: Job) -> ChunkLayout:
    """Where a job's files go; ARCHIVER_LAKE_TABLE_NAMES can point a source table at another lake table."""
    target = settings.lake_table_names.get(job.table)
    schema, name = target.split(".", 1) if target else (job.table_schema, job.table_name)
    return chunk_layout("", schema, name, job.chunk_name, job.range_start, job.range_end, job.id)


class ArchivedByTwin(Exception):  # noqa: N818 - a finding, not a failure
    """The job's chunk was archived and dropped by an earlier job for the same chunk (two planners at once)."""

    def __init__(self, twin: Job) -> None:
        super().__init__(f"archived by job {twin.id}")
        self.twin = twin


class ChunkArchiver:
    """One claimed job's archive: the files, the Delta commit, the manifest, the vault seal, the ledger record."""

    def __init__(self, conn: psycopg.Connection, ledger: Ledger, lake: Lake, vault: Vault | None, extractor: Extractor,
                 settings: Settings, *, clock: Clock, progress: Progress) -> None:
        self.conn, self.ledger, self.lake, self.vault = conn, ledger, lake, vault
        self.extractor, self.settings, self.clock, self.progress = extractor, settings, clock, progress

    def archive_claimed(self, job: Job, started: float, *, rearchive: bool = False) -> StepResult:
        """Archive a job this worker has claimed, unless it is done or blocked; a failure is recorded on the job (with
        its retry time, or as terminal) and returned, never raised."""
        name = job.chunk.qualified_chunk
        done_states = [JobState.DROPPED] if rearchive else [JobState.ARCHIVED, JobState.DROPPED]
        if job.state in done_states:
            return StepResult(job.id, name, "archive", "skipped", f"already {job.state}")
        if job.state == JobState.BLOCKED:
            return StepResult(job.id, name, "archive", "skipped", f"blocked: {job.reason}")
        sources = [JobState.PLANNED, JobState.FAILED, JobState.ARCHIVING] + ([JobState.ARCHIVED] if rearchive else [])
        job = self.ledger.start_archiving(job, sources, self.conn.info.backend_pid)
        crash_point("after_claim")
        self.progress("archiving", job, {})
        with telemetry.span("archive", job_id=job.id, table=job.table, chunk=name, attempt=job.attempts):
            try:
                result = self._archive(job, started)
            except ArchivedByTwin as done:  # planned from a stale catalog read: another worker archived the chunk
                self.ledger.retire_twin(job.id)
                return StepResult(job.id, name, "archive", "skipped", f"already archived and dropped by job {done.twin.id}",
                                  seconds=time.monotonic() - started)
            except Exception as error:  # noqa: BLE001 - any failure leaves the chunk in place and the job failed
                telemetry.chunks_failed.add(1, {"step": "archive", "table": job.table})
                return self._fail(job, error, started)
        telemetry.chunks_archived.add(1, {"table": job.table})
        telemetry.rows_archived.add(result.rows, {"table": job.table})
        telemetry.bytes_archived.add(result.bytes, {"table": job.table})
        telemetry.step_duration.record(result.seconds, {"step": "archive", "table": job.table})
        return result

    def _fail(self, job: Job, error: BaseException, started: float) -> StepResult:
        message = _first_line(error)
        try:
            if is_terminal(error):  # an unsupported type, a bad setting, a missing privilege: no retry can help
                self.ledger.mark_failed_terminal(job.id, message)
            else:
                self.ledger.mark_failed(job.id, message, self.clock() + retry_delay(self.settings, job.attempts))
        except JobStateError:
            pass
        log.error("job %s archive failed: %s", job.id, message, extra={"job_id": job.id})
        self.progress("failed", job, {"step": "archive", "error": message, "seconds": time.monotonic() - started})
        return StepResult(job.id, job.chunk.qualified_chunk, "archive", "failed", message,
                          seconds=time.monotonic() - started)

    def _archive(self, job: Job, started: float) -> StepResult:
        """Extract -> files per partition -> verify -> publish -> one Delta commit -> manifest -> ledger."""
        s = self.settings
        source = catalog.chunk_source(self.conn, str(job.kind), job.table_schema, job.table_name, job.chunk_schema,
                                      job.chunk_name)
        if source is None:
            twin = self.ledger.dropped_twin(job)
            if twin is not None:
                raise ArchivedByTwin(twin)
            raise ArchiverError(f"{job.chunk.qualified_chunk} no longer exists; it was dropped outside the archiver "
                                "before it could be archived")
        plans = plan_columns(source.columns, unsupported_as_text=s.unsupported_as_text)
        fingerprint_schema = schema_fingerprint(source.columns)
        layout = job_layout(s, job)
        destination = ArchiveDestination.open(
            self.lake, layout, job_id=job.id, range_start=job.range_start, range_end=job.range_end,
            time_name=source.time_name, time_type=source.time_type, source_columns=[c.name for c in source.columns],
            checkpoint_interval=s.delta_checkpoint_interval, source=job.table)
        plans = with_lake_names(plans, destination.lake_names)
        table = destination.table
        manifest = new_manifest(
            kind=str(job.kind), table_schema=job.table_schema, table_name=job.table_name,
            chunk_schema=job.chunk_schema, chunk_name=job.chunk_name, range_start=job.range_start,
            range_end=job.range_end, is_compressed=job.is_compressed,
            columns=recorded_columns(plans), schema_fingerprint=fingerprint_schema,
        )
        manifest.table_path, manifest.partition_columns, manifest.job_id = layout.table_dir, list(table.spec.columns), job.id
        destination.sweep_uncommitted()
        token = uuid.uuid4().hex[:8]
        with telemetry.span("extract", job_id=job.id, chunk=job.chunk.qualified_chunk):
            writer, snapshot = self._write_files(job, source, plans, layout, table.spec, manifest, token)
        committed = crossed_commit = False
        try:
            crash_point("after_temp_write")
            with telemetry.span("verify", job_id=job.id, files=len(writer.files)):
                writer.verify()
            with telemetry.span("publish", job_id=job.id, files=len(writer.files)):
                table.evolve(writer.schema.remove_metadata())
                data_files = writer.publish()
                crash_point("before_commit")
                crossed_commit = True
                previous = destination.replaced_files()
                digest = archive_digest([(f.path, f.sha256, f.rows) for f in data_files])
                commit = {
                    "token": f"{job.id}-{token}", "job_id": job.id, "source_table": job.table,
                    "source_chunk": job.chunk.qualified_chunk, "range_start": manifest.range_start,
                    "range_end": manifest.range_end, "rows": writer.rows, "content_hash": digest,
                    "snapshot": snapshot.snapshot,
                    "files": [{"path": f.path, "rows": f.rows, "bytes": f.size, "sha256": f.sha256} for f in data_files],
                    "replaces": sorted(previous), "tool": manifest.tool,
                }
                version = table.commit(data_files, previous, writer.schema.remove_metadata(), commit)
                committed = True
        except BaseException:
            # Never delete files a commit may hold: after an unclear commit error, ask the log first.
            if not committed and not (crossed_commit and table.holds_commit(f"{job.id}-{token}")):
                writer.abort()
            raise
        crash_point("after_commit")
        # The commit holds the new files; what follows is cleanup, and a refused delete (say, a WORM policy someone
        # put on the live filesystem) must not fail an archive that is already committed: it is logged instead.
        for path in previous:  # replaced by this commit: no plain-Parquet reader may see them any more
            self.lake.delete_quietly(layout.in_lake(path))
        if not job.table_path:  # archived before the Delta layout: its old files now duplicate the committed rows
            for path in [*job.lake_paths, *([job.manifest_path] if job.manifest_path else [])]:
                if path != layout.manifest():
                    self.lake.delete_quietly(path)
        try:
            self.lake.delete_tree(writer.staging_dir)
        except Exception as error:  # noqa: BLE001 - see above: cleanup only
            log.warning("job %s: staged files stay in %s (%s)", job.id, writer.staging_dir, _first_line(error),
                        extra={"job_id": job.id})
        files = [FileEntry(layout.in_lake(f.path), f.rows, f.size, f.sha256, w.row_groups)
                 for f, w in zip(data_files, writer.files, strict=True)]
        manifest.files, manifest.rows, manifest.content_hash = files, writer.rows, digest
        manifest.created_at, manifest.delta_version = self.clock().isoformat(), version
        manifest_staging = f"{writer.staging_dir}-manifest.json"
        manifest_bytes = manifest.to_json().encode()
        self.lake.write_bytes(manifest_staging, manifest_bytes)
        self.lake.move(manifest_staging, layout.manifest())
        crash_point("after_manifest")
        seal = None
        if self.vault is not None:
            with telemetry.span("seal", job_id=job.id, files=len(files)):
                seal = self.vault.seal(self.lake, files, layout, job.id, token, {
                    "source_table": job.table, "source_chunk": job.chunk.qualified_chunk, "kind": str(job.kind),
                    "range_start": manifest.range_start, "range_end": manifest.range_end, "rows": writer.rows,
                    "content_hash": digest, "delta_table": layout.table_dir, "delta_version": version,
                    "columns": recorded_columns(plans),
                    "live_manifest": layout.manifest(), "live_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                    "sealed_at": self.clock().isoformat(), "tool": manifest.tool,
                })
            crash_point("after_seal")
        nbytes = sum(f.bytes for f in files)
        job = self.ledger.mark_archived(
            job.id, lake_paths=[f.path for f in files], checksums={f.path: f.sha256 for f in files},
            manifest_path=layout.manifest(), row_count=writer.rows, byte_count=nbytes, content_hash=digest,
            schema_fingerprint=fingerprint_schema, table_path=layout.table_dir, delta_version=version,
            archive_snapshot=snapshot.snapshot, chunk_oid=snapshot.relation_oid,
            columns=recorded_columns(plans),
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            vault_manifest=seal.manifest_path if seal else None, vault_manifest_sha256=seal.manifest_sha256 if seal else None,
            file_parts={f.path: w.parts for f, w in zip(files, writer.files, strict=True) if w.parts},
        )
        crash_point("after_archived")
        self.progress("archived", job, {"rows": writer.rows, "bytes": nbytes, "seconds": time.monotonic() - started})
        log.info("job %s archived %s rows to %s (version %s)", job.id, writer.rows, layout.table_dir, version,
                 extra={"job_id": job.id})
        return StepResult(job.id, job.chunk.qualified_chunk, "archive", "done",
                          f"{len(files)} file(s), table version {version}", rows=writer.rows, bytes=nbytes,
                          seconds=time.monotonic() - started)

    def _write_files(self, job: Job, source: ChunkSource, plans: list[ColumnPlan], layout: ChunkLayout,
                     spec: PartitionSpec, manifest: Manifest, token: str) -> tuple[ChunkFileWriter, Snapshot]:
        """Stream the chunk's snapshot into staged files; once more with text companions if arrays need them."""
        try:
            return self._write_files_once(job, source, plans, layout, spec, manifest, token)
        except ArraysNeedText as odd:
            log.info("job %s: %s; archiving them as exact text beside the lists", job.id, odd, extra={"job_id": job.id})
            names = [p.output for p in plans]
            plans = [dataclasses.replace(p, text_companion=text_companion(p.output, names)) if p.name in odd.columns
                     else p for p in plans]
            return self._write_files_once(job, source, plans, layout, spec, manifest, token)

    def _write_files_once(self, job: Job, source: ChunkSource, plans: list[ColumnPlan], layout: ChunkLayout,
                          spec: PartitionSpec, manifest: Manifest, token: str) -> tuple[ChunkFileWriter, Snapshot]:
        s = self.settings
        meta = {PARQUET_KEY: manifest.embedded()}
        # A compressed chunk is read through decompression, not its heap (heap_pages is 0): its streams are time slices.
        slices = TimeSlices(source.time_name, job.range_start, job.range_end, source.compressed_pages) \
            if source.compressed and job.range_start is not None and job.range_end is not None else None
        with self.extractor.snapshot(job.chunk_schema, job.chunk_name, plans, meta, pages=source.heap_pages,
                                     slices=slices) as snap:
            writer = ChunkFileWriter(
                self.lake, layout, spec, snap.schema, job_id=job.id, token=token, row_group_rows=s.row_group_rows,
                max_file_bytes=s.max_file_bytes, zstd_level=s.zstd_level, encodings=s.parquet_encodings,
                chunk_start=job.range_start if isinstance(job.range_start, int) else None,
            )
            try:
                with telemetry.span("write", job_id=job.id, streams=snap.streams):
                    for stream, batch in snap.batches.tagged():  # a stream's rows stay in its own row groups
                        writer.write(batch, stream)
                    writer.close()
            except BaseException:
                writer.abort()
                raise
        return writer, snap
