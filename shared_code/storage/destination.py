"""Where one job's archive lives in the lake: its paths, its partition folders and its Delta table, and the sweep of
what a crashed attempt of the job left there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from .delta_table import ArchiveTable
from .lake import Lake
from .layout import ChunkLayout
from .partitioning import PartitionKey, PartitionSpec, month_keys

log = logging.getLogger("tsarchive")


@dataclass(frozen=True)
class ArchiveDestination:
    """One job's place in its table: the layout, the partition spec and the open Delta table."""

    lake: Lake
    layout: ChunkLayout
    table: ArchiveTable
    job_id: int
    range_start: datetime | int | None
    range_end: datetime | int | None

    @classmethod
    def open(cls, lake: Lake, layout: ChunkLayout, *, job_id: int, range_start: datetime | int | None,
             range_end: datetime | int | None, time_name: str, time_type: str, source_columns: list[str],
             checkpoint_interval: int, source: str) -> ArchiveDestination:
        """The job's Delta table (partitioned by its time column, partition names clear of the source's columns)."""
        spec = PartitionSpec.for_table(time_name, time_type, source_columns)
        table = ArchiveTable(lake, layout.table_dir, spec, checkpoint_interval=checkpoint_interval, source=source)
        return cls(lake, layout, table, job_id, range_start, range_end)

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
        active = self.table.active_files()
        for folder in self.partition_folders():
            for path in lake.list_files(f"{layout.table_dir}/{folder}"):
                if layout.is_job_file(path) and layout.in_table(path) not in active:
                    log.info("job %s: removing uncommitted file %s", self.job_id, path, extra={"job_id": self.job_id})
                    lake.delete(path)

    def replaced_files(self) -> dict[str, int]:
        """This job's files the table holds now (an earlier archive of the chunk), which the next commit replaces."""
        return {path: size for path, size in self.table.active_files().items() if self.layout.is_job_file(path)}
