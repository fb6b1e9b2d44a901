"""Re-checking an archive in the lake against the ledger: files, SHA-256, footers and Delta table membership."""

from __future__ import annotations

import time
from collections.abc import Callable

from .delta_table import ArchiveTable
from .lake import Lake
from .layout import ChunkLayout
from .ledger import Job
from .partitioning import PartitionSpec


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ArchiveChecker:
    """Checks archived jobs; caches each Delta table's live files across the jobs it checks."""

    def __init__(self, lake: Lake, layout_for: Callable[[Job], ChunkLayout]) -> None:
        self.lake, self.layout_for = lake, layout_for
        self.live: dict[str, dict[str, int]] = {}  # table folder -> {path in table: size}

    def problems(self, job: Job, *, checksum: bool = True) -> list[str]:
        """What is wrong with a job's archive; empty when its files match the ledger and are live in its Delta table."""
        import pyarrow.parquet as pq

        problems, rows = [], 0
        if not job.lake_paths and job.row_count != 0:
            return ["no lake files recorded"]
        for path in job.lake_paths:
            try:
                size = self.lake.size(path)
                if size is None:
                    problems.append(f"{path}: missing")
                    continue
                if checksum and self.lake.sha256(path) != job.checksums.get(path):
                    problems.append(f"{path}: checksum differs from the ledger")
                with self.lake.open_read(path) as handle:
                    rows += pq.ParquetFile(handle).metadata.num_rows
            except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid (a ValueError) on a bad footer
                problems.append(f"{path}: unreadable ({first_line(error)})")
        if not problems and rows != job.row_count:
            problems.append(f"footers hold {rows} rows, the ledger {job.row_count}")
        if job.table_path:
            problems.extend(self._table_holds(job))
        return problems

    def forget(self, table_path: str | None) -> None:
        """Drop the cached live files of a table (it has a new version)."""
        if table_path:
            self.live.pop(table_path, None)

    def _table_holds(self, job: Job) -> list[str]:
        """The Delta table's latest version holds exactly this job's recorded files."""
        assert job.table_path is not None
        if job.table_path not in self.live:
            any_spec = PartitionSpec("", (), integer=False)  # listing live files needs no partition knowledge
            self.live[job.table_path] = ArchiveTable(self.lake, job.table_path, any_spec, source=job.table).active_files()
        live = self.live[job.table_path]
        layout = self.layout_for(job)
        recorded = {layout.in_table(p) for p in job.lake_paths}
        problems = [f"{layout.in_lake(p)}: not in the Delta table's latest version" for p in sorted(recorded - set(live))]
        strays = sorted(p for p in live if layout.is_job_file(p) and p not in recorded)
        problems.extend(f"{layout.in_lake(p)}: in the Delta table but not in the ledger" for p in strays)
        return problems

    def uncommitted_files(self, table_path: str, min_age_s: float = 3600) -> list[str]:
        """Visible data files of a table that no commit holds and no archive is still writing (older than an hour)."""
        live = self.live.get(table_path, {})
        prefix = table_path + "/"
        ages = self.lake.file_ages(table_path, time.time())
        return sorted(path for path, age in ages.items() if path.endswith(".parquet") and age >= min_age_s
                      and not any(part.startswith(("_", ".")) for part in path[len(prefix):].split("/"))
                      and path[len(prefix):] not in live)
