"""Where one job's archive lives in the lake: its paths, its partition folders and its Delta table, and the sweep of
what a crashed attempt of the job left there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from .. import lake_columns
from .delta_table import ArchiveTable
from .lake import Lake
from .layout import ChunkLayout
from .partitioning import PartitionKey, PartitionSpec, month_keys

log = logging.getLogger("tsarchive")


_warned: set[str] = set()


def _warn_unreadable(source: str, names: list[str]) -> None:
    """Once per table and process: a table archived before lake names may hold names Spark-based readers refuse."""
    problems = lake_columns.reader_problems(names)
    if problems and source not in _warned:
        _warned.add(source)
        log.warning("the archive table of %s was created before its column names were made safe for every reader: %s. "
                    "Spark-based readers (Databricks, Fabric notebooks, Synapse Spark) refuse it; DuckDB, delta-rs, "
                    "Polars and Synapse serverless read it. Its existing names stay (a lake name never changes) and new "
                    "columns get safe ones; to make every name safe, archive into a new table with "
                    "ARCHIVER_LAKE_TABLE_NAMES='%s=%s_v2' (docs/querying.md, Column names)",
                    source, "; ".join(problems), source, source)


@dataclass(frozen=True)
class ArchiveDestination:
    """One job's place in its table: the layout, the partition spec and the open Delta table."""

    lake: Lake
    layout: ChunkLayout
    table: ArchiveTable
    job_id: int
    range_start: datetime | int | None
    range_end: datetime | int | None
    lake_names: dict[str, str]  # each source column's name in the table (lake_columns.py)
    active: dict[str, int]  # the table's live files when it was opened (path in table -> size)

    @classmethod
    def open(cls, lake: Lake, layout: ChunkLayout, *, job_id: int, range_start: datetime | int | None,
             range_end: datetime | int | None, time_name: str, time_type: str, source_columns: list[str],
             checkpoint_interval: int, source: str) -> ArchiveDestination:
        """The job's Delta table: each source column's lake name (kept if the table has it, else derived clear of
        every name the table has), and the partition columns (clear of the data columns' lake names)."""
        probe = ArchiveTable(lake, layout.table_dir, PartitionSpec("", (), integer=False), source=source)
        loaded = probe.load()
        existing, names = ArchiveTable.recorded_names(loaded)
        _warn_unreadable(source, names)
        lake_names = lake_columns.assign(source_columns, existing, reserved=names)
        spec = PartitionSpec.for_table(lake_names[time_name], time_type, list(lake_names.values()))
        table = ArchiveTable(lake, layout.table_dir, spec, checkpoint_interval=checkpoint_interval, source=source)
        active = probe.active_files(loaded) if loaded is not None else {}
        return cls(lake, layout, table, job_id, range_start, range_end, lake_names, active)

    @property
    def spec(self) -> PartitionSpec:
        return self.table.spec

    def partition_folders(self) -> list[str]:
        """The folders a chunk's rows can land in (its months, or its integer range, and the null partition)."""
        spec = self.spec
        if spec.integer:
            keys: list[PartitionKey] = [(self.range_start if isinstance(self.range_start, int) else None,)]
        else:
            keys = month_keys(self.range_start, self.range_end)
        return [spec.folder(k) for k in keys] + [spec.folder((None,) * len(spec.columns))]

    def sweep_uncommitted(self) -> None:
        """Remove what a crashed attempt of this job left: staging files, and visible files no commit holds.

        Safe only while the caller holds the job's claim: no other attempt of this job is writing.
        """
        layout, lake = self.layout, self.lake
        for path in lake.list_files(layout.staging_root):
            if path[len(layout.staging_root) + 1:].startswith(f"{self.job_id}-"):
                lake.delete(path)
        active = self.active
        for folder in self.partition_folders():
            for path in lake.list_files(f"{layout.table_dir}/{folder}"):
                if layout.is_job_file(path) and layout.in_table(path) not in active:
                    log.info("job %s: removing uncommitted file %s", self.job_id, path, extra={"job_id": self.job_id})
                    lake.delete(path)

    def replaced_files(self) -> dict[str, int]:
        """This job's files the table holds now (an earlier archive of the chunk), which the next commit replaces."""
        return {path: size for path, size in self.table.active_files().items() if self.layout.is_job_file(path)}
