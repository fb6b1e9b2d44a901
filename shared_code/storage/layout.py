"""Lake path layout: one Delta table per source table; deterministic names, safe for odd identifiers.

Table:     <prefix>/<schema>.<table>/                                   (a Delta Lake table; `_delta_log/` inside)
Data:      <table>/<partition folder>/<from>_<to>-<chunk>-j<job>-<token>-pNNN.parquet
Manifest:  <table>/_tsarchive/manifests/<from>_<to>-<chunk>-j<job>.json  (hidden)
Staging:   <table>/_tsarchive/staging/<job>-<token>/...                  (hidden, in-flight writes)
The partition folder is `year=YYYY/month=M` (time) or `range_start=N` (integer time); see partitioning.py.
Names keep to [A-Za-z0-9_-.=~]: no character needs percent-encoding in a Delta log path, a URL or a glob. The ledger
job id keeps a recreated partition's archive apart from the earlier one; the token tells one attempt's files from
another's, so a re-archive can add its files and remove the old ones in one commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import LayoutError

_SAFE = re.compile(r"[A-Za-z0-9_\-]")
WORK_DIR = "_tsarchive"  # hidden from Hive/Spark/DuckDB readers by its leading `_`
DELTA_LOG = "_delta_log"


def escape(name: str) -> str:
    """Encode everything but [A-Za-z0-9_-] as `~HH` (UTF-8 bytes); injective, path-, URL- and glob-safe."""
    if not name:
        raise LayoutError("cannot build a lake path from an empty name")
    return "".join(ch if _SAFE.match(ch) else "".join(f"~{b:02X}" for b in ch.encode()) for ch in name)


def unescape(text: str) -> str:
    """Reverse escape()."""
    return re.sub(r"(?:~[0-9A-F]{2})+", lambda m: bytes.fromhex(m.group(0).replace("~", "")).decode(), text)


def visible(name: str) -> str:
    """Make a file name readers will not skip: strip leading `_` and `.` (e.g. `_hyper_1_2_chunk`)."""
    stripped = name.lstrip("_.")
    return stripped or "chunk"


def _stamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def table_dir(prefix: str, table_schema: str, table_name: str) -> str:
    """The Delta table folder of a source table, relative to the lake root."""
    name = f"{escape(table_schema)}.{escape(table_name)}"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


@dataclass(frozen=True)
class ChunkLayout:
    """Paths of one job's archive files, relative to the lake root."""

    table_dir: str
    stem: str  # <from>_<to>-<chunk>-j<job>

    def data_file(self, folder: str, token: str, part: int) -> str:
        return f"{self.table_dir}/{folder}/{self.stem}-{token}-p{part:03d}.parquet"

    def staging_file(self, job_id: int, token: str, part: int) -> str:
        return f"{self.staging_root}/{job_id}-{token}/{part:03d}.parquet"

    @property
    def staging_root(self) -> str:
        return f"{self.table_dir}/{WORK_DIR}/staging"

    def manifest(self) -> str:
        return f"{self.table_dir}/{WORK_DIR}/manifests/{self.stem}.json"

    def in_table(self, path: str) -> str:
        """A lake path as the Delta log records it (relative to the table folder)."""
        prefix = self.table_dir + "/"
        if not path.startswith(prefix):
            raise LayoutError(f"{path} is outside the table folder {self.table_dir}")
        return path[len(prefix):]

    def in_lake(self, table_path: str) -> str:
        return f"{self.table_dir}/{table_path}"

    def is_job_file(self, path: str) -> bool:
        """True for this job's data files, of any attempt and part."""
        name = path.rsplit("/", 1)[-1]
        return re.fullmatch(re.escape(self.stem) + r"-[0-9a-f]{8}-p\d{3}\.parquet", name) is not None


def chunk_layout(
    prefix: str,
    table_schema: str,
    table_name: str,
    chunk_name: str,
    range_start: datetime | int | None,
    range_end: datetime | int | None,
    job_id: int | None = None,
) -> ChunkLayout:
    """Build the deterministic layout of one job's chunk."""
    chunk = escape(visible(chunk_name))
    if isinstance(range_start, datetime) or isinstance(range_end, datetime):
        lo = _stamp(range_start) if isinstance(range_start, datetime) else "min"
        hi = _stamp(range_end) if isinstance(range_end, datetime) else "max"
    elif isinstance(range_start, int) or isinstance(range_end, int):
        lo = "min" if range_start is None else escape(str(range_start))
        hi = "max" if range_end is None else escape(str(range_end))
    else:
        raise LayoutError(f"chunk {chunk_name!r} has no range; cannot place it in the lake")
    suffix = f"-j{job_id}" if job_id is not None else ""
    return ChunkLayout(table_dir=table_dir(prefix, table_schema, table_name), stem=f"{lo}_{hi}-{chunk}{suffix}")
