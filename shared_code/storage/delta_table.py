"""The Delta Lake table of one archived source table (delta-rs): snapshot reads, schema evolution, commits.

The protocol stays at reader 1 / writer 2 with no table features (no deletion vectors, no v2 checkpoints, no
timestamp_ntz, no type widening), which Synapse serverless, Fabric, Databricks and DuckDB all read. Data files are
written and verified by archive_writer.py; this module only commits them: one commit per chunk, adding the new
files and removing the job's earlier ones together, so a reader at any version sees each row once.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import lake_columns
from ..errors import ArchiverError, OfflineError, SchemaEvolutionError, render_error
from ..lake_columns import PG_NAME
from .layout import DELTA_LOG
from .partitioning import PartitionSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from .lake import Lake

log = logging.getLogger("tsarchive")

COMMIT_KEY = "tsarchive"
_COMMIT_ATTEMPTS = 30  # table-creation races and spurious conflicts between replacing commits


@dataclass
class DataFile:
    """One verified data file, as the Delta log records it."""

    path: str  # relative to the table folder
    partition_values: dict[str, str | None]
    size: int
    rows: int
    sha256: str
    stats: dict[str, Any] = field(default_factory=dict)


def _delta_type(arrow_field: pa.Field) -> str:
    import pyarrow as pa
    from deltalake import Schema

    return _type_name(Schema.from_arrow(pa.schema([arrow_field.remove_metadata()])).fields[0].type)


def _type_name(delta_type: Any) -> str:
    """`long`, `decimal(10,2)`, `array<integer>`...: the Delta type as a reader would name it."""
    text = str(delta_type)
    match = re.fullmatch(r'PrimitiveType\("(.+)"\)', text)
    return match.group(1) if match else text


class ArchiveTable:
    """A Delta table in the lake, opened fresh for each operation (credentials are renewed each time)."""

    def __init__(self, lake: Lake, table_dir: str, spec: PartitionSpec, *, checkpoint_interval: int = 10,
                 source: str = "") -> None:
        self.lake = lake
        self.table_dir = table_dir
        self.spec = spec
        self.checkpoint_interval = checkpoint_interval
        self.source = source or table_dir

    @property
    def uri(self) -> str:
        return self.lake.delta_uri(self.table_dir)

    def load(self):
        """The latest snapshot, or None if the table does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        options = self.lake.delta_storage_options()
        try:
            return DeltaTable(self.uri, storage_options=options)
        except TableNotFoundError:
            return None
        except OSError:
            # object_store reads a 409 BlobArchived as "already exists": say what it is when the log is offline
            offline = self.lake.offline(self.lake.list_files(f"{self.table_dir}/{DELTA_LOG}"))
            if offline:
                raise OfflineError(
                    f"the Delta log of {self.source} is in the Archive tier ({len(offline)} log file(s) offline, "
                    f"e.g. {offline[0].path}), so no reader can open the table; bring it back with: "
                    f"tsarchive rehydrate --hypertable {self.source}") from None
            raise

    def active_files(self, table: Any = None) -> dict[str, int]:
        """Data files in the latest version (or in `table`, a snapshot just loaded): table-relative path -> size."""
        import pyarrow as pa

        table = table or self.load()
        if table is None:
            return {}
        actions = pa.table(table.get_add_actions(flatten=True))
        return dict(zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist(), strict=True))

    # -- schema -------------------------------------------------------------------------------
    @staticmethod
    def recorded_names(table: Any) -> tuple[dict[str, str], list[str]]:
        """(PostgreSQL name -> lake name of each data column, every column name) of a loaded table; ({}, []) if none.

        A field without `pg_name` (archived before lake names) is its own PostgreSQL name. Partition columns and
        text companions are not data columns.
        """
        if table is None:
            return {}, []
        partitions = set(table.metadata().partition_columns)
        mapping: dict[str, str] = {}
        names = []
        for delta_field in table.schema().fields:
            names.append(delta_field.name)
            meta = delta_field.metadata or {}
            if delta_field.name in partitions or "text_of" in meta:
                continue
            mapping.setdefault(str(meta.get(PG_NAME, delta_field.name)), delta_field.name)
        return mapping, names

    def _check_partitioning(self, table) -> None:
        existing = list(table.metadata().partition_columns)
        if existing != list(self.spec.columns):
            raise SchemaEvolutionError(
                f"the archive table of {self.source} is partitioned by {existing}, but its rows now call for "
                f"{list(self.spec.columns)} (a source column took a partition column's name). Rename that source "
                "column, or archive into a new table by setting ARCHIVER_LAKE_TABLE_NAMES."
            )

    def evolve(self, data_schema: pa.Schema) -> list[str]:
        """Make the table's schema accept files of `data_schema`; return the columns added.

        Added source columns become nullable table columns (earlier rows read NULL). Dropped source columns stay
        in the table (later rows read NULL). A changed type cannot be widened at this protocol level: that is a
        SchemaEvolutionError naming the column and the way out.
        """
        from deltalake import Field, Schema

        last_error: Exception | None = None
        for _ in range(_COMMIT_ATTEMPTS):
            table = self.load()
            if table is None:
                return []  # the first commit creates the table with this schema
            self._check_partitioning(table)
            current = {f.name: f for f in table.schema().fields}
            added = []
            for arrow_field in data_schema:
                known = current.get(arrow_field.name)
                wanted = _delta_type(arrow_field)
                if known is None:
                    added.append(arrow_field)
                elif _type_name(known.type) != wanted:
                    raise SchemaEvolutionError(
                        f"column {arrow_field.name!r} of {self.source} is now {wanted} in the source, but the archive "
                        f"table stores it as {_type_name(known.type)}. Delta (reader 1 / writer 2) cannot change a column's "
                        "type. Either restore the column's type, or archive into a new table by setting "
                        f"ARCHIVER_LAKE_TABLE_NAMES='{self.source}={self.source}_v2' (the old table stays readable); "
                        "then `tsarchive run` (or `tsarchive retry JOB`) archives what this stopped; the timer does not "
                        "resend it."
                    )
            if not added:
                return []
            fields = [Field(f.name, Schema.from_arrow(pa_schema([f.remove_metadata()])).fields[0].type, nullable=True,
                            metadata={k.decode(): v.decode() for k, v in (f.metadata or {}).items()})
                      for f in added]
            try:
                table.alter.add_columns(fields)
            except Exception as error:  # noqa: BLE001 - a concurrent archiver changed the table: look again
                self._refuse_schema(error, [f.name for f in added])
                last_error = error
                time.sleep(0.05)
                continue
            log.info("archive table %s gained column(s) %s", self.source, ", ".join(f.name for f in added))
            return [f.name for f in added]
        raise ArchiverError(f"could not add columns to the archive table of {self.source}: {last_error}; "
                            "the next run retries")

    def _refuse_schema(self, error: Exception, columns: list[str]) -> None:
        """A schema delta-rs will not hold, as one terminal message with the way out instead of its own text."""
        if "Schema error" not in str(error) and type(error).__name__ != "SchemaMismatchError":
            return
        problems = lake_columns.reader_problems(columns)
        raise SchemaEvolutionError(
            f"the archive table of {self.source} cannot take column(s) {', '.join(map(repr, columns))}"
            f"{' (' + '; '.join(problems) + ')' if problems else ''}: {render_error(error)}. Archive into a new table "
            f"with ARCHIVER_LAKE_TABLE_NAMES='{self.source}={self.source}_v2' (its columns get names every reader "
            "takes), then `tsarchive run` (or `tsarchive retry JOB`); the timer does not resend it") from None

    # -- commits --------------------------------------------------------------------------------
    def commit(self, adds: list[DataFile], removes: dict[str, int], data_schema: pa.Schema,
               metadata: dict[str, Any]) -> int | None:
        """One commit: add `adds`, remove `removes` (path -> size); return the new version (None: committed, version
        not found in the log).

        Concurrent commits from other archivers are retried by delta-rs (appends never conflict); the very first
        commit creates the table, and a lost creation race falls back to an append.
        """
        from deltalake import CommitProperties, Schema
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

        now_ms = int(time.time() * 1000)
        add_actions = [AddAction(f.path, f.size, f.partition_values, now_ms, True,
                                 json.dumps({"numRecords": f.rows, **f.stats}, separators=(",", ":")))
                       for f in adds]
        remove_actions = [RemoveAction(path, True, now_ms, size, self._partition_values_of(path))
                          for path, size in removes.items()]
        props = CommitProperties(custom_metadata={COMMIT_KEY: metadata}, max_commit_retries=100)
        # A creation must not be retried on top of another archiver's creation (it would re-declare the table):
        # a lost race raises, and the loop appends instead.
        create_props = CommitProperties(custom_metadata={COMMIT_KEY: metadata}, max_commit_retries=0)
        options = self.lake.delta_storage_options()
        for _ in range(_COMMIT_ATTEMPTS):
            table = self.load()
            if table is None:
                if remove_actions:
                    raise ArchiverError(f"the archive table of {self.source} vanished; files to replace are unknown")
                schema = pa_schema(list(data_schema) + self.spec.arrow_fields())
                try:
                    create_table_with_add_actions(
                        self.uri, Schema.from_arrow(schema), add_actions, mode="error",
                        partition_by=list(self.spec.columns), name=self.source,
                        description=f"tsarchive archive of {self.source}",
                        configuration={"delta.checkpointInterval": str(self.checkpoint_interval)},
                        storage_options=options, commit_properties=create_props,
                    )
                    return self._version_of(metadata, -1)
                except Exception as error:  # noqa: BLE001 - another archiver created it first: append instead
                    if self.load() is None:
                        self._refuse_schema(error, schema.names)
                        raise
                    landed = self._version_of(metadata, -1)
                    if landed is not None:  # ours after all: never append it a second time
                        return landed
                    log.info("archive table %s was created concurrently (%s); appending", self.source,
                             render_error(error))
                    continue
            self._check_partitioning(table)
            schema = table.schema()
            read_version = int(table.version())
            try:
                table.create_write_transaction(add_actions + remove_actions, mode="append", schema=schema,
                                               partition_by=list(self.spec.columns), commit_properties=props)
            except CommitFailedError as error:
                landed = self._version_of(metadata, read_version)
                if landed is not None:  # it was written after all (an error reported after the log entry landed)
                    return landed
                # delta-rs treats a commit that removes files as having read the whole table, so any concurrent
                # replacing commit conflicts with it. Ours only removes this job's own files, which no other archiver
                # touches (the job is claimed): when they are all still live, the same commit is valid on the new
                # version, so retry it there.
                live = self.active_files()
                if any(path not in live for path in removes):
                    raise ArchiverError(f"the files this archive replaces in {self.source} were removed by another "
                                        f"commit ({render_error(error)}); the next run retries") from None
                log.info("commit to %s conflicted with a concurrent one; retrying on the new version", self.source)
                time.sleep(random.uniform(0.02, 0.3))
                continue
            return self._version_of(metadata, read_version)
        raise ArchiverError(f"could not commit to the archive table of {self.source}; the next run retries")

    def _partition_values_of(self, path: str) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for part in path.split("/")[:-1]:
            name, _, value = part.partition("=")
            if name in self.spec.columns:
                values[name] = None if value.startswith("__HIVE_DEFAULT") else str(int(value))
        return values

    def _version_of(self, metadata: dict[str, Any], read_version: int) -> int | None:
        """The version holding our commit: the first log entry after the version we read that carries our token.

        Read from the log files themselves, since other archivers may have committed before and after ours. None if
        it cannot be found (or the log cannot be read): callers must not take that as "not committed".
        """
        token = metadata.get("token")
        try:
            for version in range(read_version + 1, read_version + 1000):
                entry = f"{self.table_dir}/_delta_log/{version:020d}.json"
                if not self.lake.exists(entry):
                    break
                for line in self.lake.read_bytes(entry).splitlines():
                    info = json.loads(line).get("commitInfo") if line.strip() else None
                    if info is not None and info.get(COMMIT_KEY, {}).get("token") == token:
                        return version
        except (OSError, ValueError) as error:
            log.warning("could not read the Delta log of %s to find commit %s: %s", self.source, token, error)
        return None

    def holds_commit(self, token: str) -> bool:
        """Whether one of the latest 200 commits is the one carrying this token (after an unclear commit error)."""
        try:
            table = self.load()
            return table is not None and any(entry.get(COMMIT_KEY, {}).get("token") == token
                                             for entry in table.history(limit=200))
        except Exception:  # noqa: BLE001 - unreadable now: the caller treats "unknown" as committed
            return True

    def commit_metadata(self, version: int) -> dict[str, Any] | None:
        """The tsarchive metadata of a commit, if it is one of ours."""
        table = self.load()
        if table is None:
            return None
        for entry in table.history():
            if int(entry.get("version", -1)) == version:
                return entry.get(COMMIT_KEY)
        return None


def pa_schema(fields: list) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(fields)
