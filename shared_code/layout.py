"""Lake path layout: deterministic, Hive-style, safe for odd names, never hidden by readers.

Data:      <prefix>/<schema>.<table>/year=YYYY/month=MM/<from>_<to>-<chunk>-j<job>[-pNNN].parquet
Manifest:  <prefix>/<schema>.<table>/year=YYYY/month=MM/_<from>_<to>-<chunk>-j<job>.manifest.json
Temporary: <prefix>/<schema>.<table>/_tmp/<token>-<file name>
Superseded:<prefix>/<schema>.<table>/_superseded/<stamp>/<file name>
Integer-time chunks use `range=<from>_<to>` instead of year/month.
The ledger job id keeps names unique when a partition name comes back (recreated for late rows) or repeats across
schemas: a later job never replaces or hides an earlier job's files; re-archiving one job replaces its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import LayoutError

_SAFE = re.compile(r"[A-Za-z0-9_\-]")


class LayoutPaths:
    """Folder names that readers must skip (Hive/Spark convention: a leading `_` or `.`)."""

    TEMP = "_tmp"
    SUPERSEDED = "_superseded"


def escape(name: str) -> str:
    """Percent-encode everything but [A-Za-z0-9_-]; the result is reversible and path-safe."""
    if not name:
        raise LayoutError("cannot build a lake path from an empty name")
    return "".join(ch if _SAFE.match(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in name)


def visible(name: str) -> str:
    """Make a file name readers will not skip: strip leading `_` and `.` (e.g. `_hyper_1_2_chunk`)."""
    stripped = name.lstrip("_.")
    return stripped or "chunk"


def _stamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class ChunkLayout:
    """Paths of one chunk's archive, relative to the lake root."""

    table_dir: str
    partition_dir: str
    base_name: str

    def data_file(self, part: int, parts: int) -> str:
        suffix = "" if parts == 1 else f"-p{part:03d}"
        return f"{self.partition_dir}/{self.base_name}{suffix}.parquet"

    def manifest(self) -> str:
        return f"{self.partition_dir}/_{self.base_name}.manifest.json"

    def temp_file(self, token: str, final_path: str) -> str:
        return f"{self.table_dir}/{LayoutPaths.TEMP}/{token}-{final_path.rsplit('/', 1)[-1]}"

    def superseded(self, stamp: str, final_path: str) -> str:
        return f"{self.table_dir}/{LayoutPaths.SUPERSEDED}/{stamp}/{final_path.rsplit('/', 1)[-1]}"

    def is_part_of(self, path: str) -> bool:
        """True for this chunk's data files, whatever their part count."""
        name = path.rsplit("/", 1)[-1]
        return path.startswith(self.partition_dir + "/") and re.fullmatch(
            re.escape(self.base_name) + r"(-p\d{3})?\.parquet", name
        ) is not None


def chunk_layout(
    prefix: str,
    table_schema: str,
    table_name: str,
    chunk_name: str,
    range_start: datetime | int | None,
    range_end: datetime | int | None,
    job_id: int | None = None,
) -> ChunkLayout:
    """Build the deterministic layout of one chunk."""
    table_dir = f"{escape(table_schema)}.{escape(table_name)}"
    if prefix.strip("/"):
        table_dir = f"{prefix.strip('/')}/{table_dir}"
    chunk = escape(visible(chunk_name))
    if isinstance(range_start, datetime) or isinstance(range_end, datetime):
        anchor = range_start if isinstance(range_start, datetime) else range_end
        assert isinstance(anchor, datetime)
        anchor = anchor.astimezone(UTC) if anchor.tzinfo else anchor
        lo = _stamp(range_start) if isinstance(range_start, datetime) else "min"
        hi = _stamp(range_end) if isinstance(range_end, datetime) else "max"
        partition_dir = f"{table_dir}/year={anchor.year:04d}/month={anchor.month:02d}"
    elif isinstance(range_start, int) or isinstance(range_end, int):
        lo = "min" if range_start is None else str(range_start)
        hi = "max" if range_end is None else str(range_end)
        partition_dir = f"{table_dir}/range={escape(lo)}_{escape(hi)}"
    else:
        raise LayoutError(f"chunk {chunk_name!r} has no range; cannot place it in the lake")
    suffix = f"-j{job_id}" if job_id is not None else ""
    return ChunkLayout(table_dir=table_dir, partition_dir=partition_dir, base_name=f"{lo}_{hi}-{chunk}{suffix}")
