"""Re-checking an archive in the lake against the ledger: files, SHA-256, footers and Delta table membership."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import render_error
from ..ledger.jobs import Job
from ..storage.delta_table import ArchiveTable
from ..storage.lake import Lake
from ..storage.layout import ChunkLayout
from ..storage.manifest import archive_digest
from ..storage.partitioning import PartitionSpec

if TYPE_CHECKING:
    from ..storage.vault import Vault


def first_line(error: BaseException) -> str:
    return render_error(error)


class ArchiveChecker:
    """Checks archived jobs; caches each Delta table's live files across the jobs it checks."""

    def __init__(self, lake: Lake, layout_for: Callable[[Job], ChunkLayout], vault: Vault | None = None) -> None:
        self.lake, self.layout_for, self.vault = lake, layout_for, vault
        self.live: dict[str, dict[str, int]] = {}  # table folder -> {path in table: size}

    def problems(self, job: Job, *, checksum: bool = True, deep: bool = False, before_drop: bool = False) -> list[str]:
        """What is wrong with a job's archive; empty when its files match the ledger and are live in its Delta table.

        deep (the recovery drill): also decode every row group of every file, recompute the archive's content hash
        from the files as they are now, and read the vault copies back. before_drop: with a vault, an archive not yet
        sealed there is a problem (the drop re-archives it, which seals it); the vault copies are checked by size.
        """
        import pyarrow.parquet as pq

        problems, rows, found = [], 0, []
        if not job.lake_paths and job.row_count != 0:
            return ["no lake files recorded"]
        for path in job.lake_paths:
            try:
                size = self.lake.size(path)
                if size is None:
                    problems.append(f"{path}: missing")
                    continue
                digest = self.lake.sha256(path) if checksum or deep else job.checksums.get(path, "")
                if checksum and digest != job.checksums.get(path):
                    problems.append(f"{path}: checksum differs from the ledger")
                with self.lake.open_read(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    in_footer = parquet.metadata.num_rows
                    if deep:
                        decoded = sum(parquet.read_row_group(i).num_rows for i in range(parquet.num_row_groups))
                        if decoded != in_footer:
                            problems.append(f"{path}: {decoded} rows decode, the footer says {in_footer}")
                rows += in_footer
                found.append((self.layout_for(job).in_table(path), digest, in_footer))
            except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid (a ValueError) on a bad footer
                problems.append(f"{path}: unreadable ({first_line(error)})")
        if not problems and rows != job.row_count:
            problems.append(f"footers hold {rows} rows, the ledger {job.row_count}")
        if deep and not problems and (job.content_hash or "").startswith("sha256:") \
                and archive_digest(found) != job.content_hash:
            problems.append("the files' content hash differs from the one recorded at archive time")
        if job.table_path:
            problems.extend(self._table_holds(job))
        if self.vault is not None and job.vault_manifest:
            problems.extend(self.vault.problems(job, checksum=deep))
        elif self.vault is not None and before_drop:
            problems.append("no immutable copy in the vault yet (ARCHIVER_VAULT_URL was set after this chunk was "
                            "archived); archiving it again seals one")
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
