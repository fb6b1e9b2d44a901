"""The archive manifest: what a chunk's files hold, enough to use the archive without the database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .. import __version__

MANIFEST_VERSION = 2
PARQUET_KEY = b"tsarchive.manifest"


def _iso(value: datetime | int | None) -> str | int | None:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass
class FileEntry:
    path: str
    rows: int
    bytes: int
    sha256: str
    row_groups: int


@dataclass
class Manifest:
    source_kind: str
    table_schema: str
    table_name: str
    chunk_schema: str
    chunk_name: str
    range_start: str | int | None
    range_end: str | int | None
    is_compressed: bool
    columns: list[dict[str, str]]
    schema_fingerprint: str
    rows: int = 0
    content_hash: str = ""
    files: list[FileEntry] = field(default_factory=list)
    created_at: str = ""
    tool: str = f"tsarchive {__version__}"
    manifest_version: int = MANIFEST_VERSION
    table_path: str = ""  # the Delta table folder, relative to the lake root
    partition_columns: list[str] = field(default_factory=list)
    delta_version: int | None = None
    job_id: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def embedded(self) -> bytes:
        """The part known before writing, for each Parquet file's key-value metadata."""
        data: dict[str, Any] = asdict(self)
        for key in ("files", "rows", "content_hash", "created_at", "delta_version"):
            data.pop(key, None)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        files = [FileEntry(**entry) for entry in data.pop("files", [])]
        known = set(cls.__dataclass_fields__)
        return cls(files=files, **{k: v for k, v in data.items() if k in known})


def new_manifest(*, kind: str, table_schema: str, table_name: str, chunk_schema: str, chunk_name: str,
                 range_start: datetime | int | None, range_end: datetime | int | None, is_compressed: bool,
                 columns: list[dict[str, str]], schema_fingerprint: str) -> Manifest:
    return Manifest(
        source_kind=kind, table_schema=table_schema, table_name=table_name, chunk_schema=chunk_schema,
        chunk_name=chunk_name, range_start=_iso(range_start), range_end=_iso(range_end),
        is_compressed=is_compressed, columns=columns, schema_fingerprint=schema_fingerprint,
    )


def archive_digest(files: list[tuple[str, str, int]]) -> str:
    """An archive's content identity: SHA-256 over its files' (table-relative path, SHA-256, rows), in path order."""
    text = "\n".join(f"{path} {sha} {rows}" for path, sha, rows in sorted(files))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
