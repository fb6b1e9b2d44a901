"""Writes one job attempt's Parquet files: open per partition, write row groups, rotate, close, verify, publish.

In the spirit of dlt's BufferedDataWriter: the engine hands it Arrow batches and gets back verified files. Files are
written under a hidden staging folder while they are SHA-256-hashed, read back and checked (size, digest, footer
rows, schema, embedded manifest), then moved to their visible partition folder. Committing them is delta_table.py's
job; until then `abort()` removes everything this attempt wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import VerificationError
from ..faults import crash_point
from ..storage.delta_table import DataFile
from ..storage.file_parts import part_bounds, recorded
from ..storage.layout import ChunkLayout
from ..storage.manifest import PARQUET_KEY
from ..storage.partitioning import PartitionKey, PartitionSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from ..storage.lake import HashingSink, Lake

_INT64_MAX = 9_223_372_036_854_775_807
_INT32_MAX = 2_147_483_647
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _OpenFile:
    key: PartitionKey
    part: int
    staging: str
    sink: HashingSink
    writer: Any
    rows: int = 0
    row_groups: int = 0


@dataclass
class WrittenFile:
    """A closed file: where it is staged, where it goes, and what it holds."""

    key: PartitionKey
    part: int
    staging: str
    final: str
    rows: int
    bytes: int
    sha256: str
    row_groups: int
    stats: dict[str, Any]
    parts: list | None = None  # [[offset, length, sha256], ...] from the read-back (file_parts.py)


def encoding_options(schema: pa.Schema, encodings: str) -> dict[str, Any]:
    """ParquetWriter options per column type.

    standard: dictionary pages only where values repeat (text, integers, booleans, dates); floats and timestamps, nearly
    all distinct, go PLAIN, which saves the dictionary attempt and its fallback. Every Parquet reader reads this.
    Statistics (min/max, null count) for every column but json/jsonb.
    compact: timestamps and 64-bit integers DELTA_BINARY_PACKED (floats as standard): about 15% smaller and less CPU,
    but needs a reader with that Parquet 2 encoding (Spark 3.3+, DuckDB, delta-rs, Polars, pyarrow). Not
    BYTE_STREAM_SPLIT for floats, though it saves more: Spark's default (vectorized) Parquet reader refuses it in every
    release so far, so Databricks, Fabric and Synapse Spark could not read the table.
    """
    import pyarrow as pa

    dictionary, column_encoding, statistics = [], {}, []
    for field in schema:
        # min/max of JSON text prunes nothing a reader asks for, and costs the writer a comparison per value
        if (field.metadata or {}).get(b"pg_type") not in (b"json", b"jsonb"):
            statistics.append(field.name)
        kind = field.type
        if pa.types.is_floating(kind):
            pass  # PLAIN: nearly all distinct
        elif pa.types.is_timestamp(kind) or pa.types.is_time(kind):
            if encodings == "compact":
                column_encoding[field.name] = "DELTA_BINARY_PACKED"
        elif encodings == "compact" and pa.types.is_int64(kind):
            column_encoding[field.name] = "DELTA_BINARY_PACKED"
        else:
            dictionary.append(field.name)
    options: dict[str, Any] = {"use_dictionary": dictionary, "write_statistics": statistics}
    if column_encoding:
        options["column_encoding"] = column_encoding
    return options


class ChunkFileWriter:
    """One attempt's files for one chunk, at most one open file per partition."""

    def __init__(self, lake: Lake, layout: ChunkLayout, spec: PartitionSpec, schema: pa.Schema, *, job_id: int,
                 token: str, row_group_rows: int, max_file_bytes: int, zstd_level: int,
                 chunk_start: int | None = None, encodings: str = "standard") -> None:
        self.lake = lake
        self.layout = layout
        self.spec = spec
        self.schema = schema
        self.job_id = job_id
        self.token = token
        self.row_group_rows = row_group_rows
        self.max_file_bytes = max_file_bytes
        self.zstd_level = zstd_level
        self.chunk_start = chunk_start
        self.encodings = encodings
        self._open: dict[PartitionKey, _OpenFile] = {}
        self._buffers: dict[tuple[PartitionKey, int], list[pa.RecordBatch]] = {}  # (partition, stream) -> rows
        self._buffered: dict[tuple[PartitionKey, int], int] = {}
        self._streams: set[int] = set()
        self._parts: dict[PartitionKey, int] = {}
        self.files: list[WrittenFile] = []
        self.published: list[str] = []

    @property
    def staging_dir(self) -> str:
        return self.layout.staging_file(self.job_id, self.token, 0).rsplit("/", 1)[0]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    # -- writing -------------------------------------------------------------------------------
    def write(self, batch: pa.RecordBatch, stream: int = 0) -> None:
        """Buffer a batch's rows by partition and by the stream they came from; write a buffer as a row group once it
        holds a row group's worth, or the fullest once all buffers hold that much per stream.

        Streams read different stretches of a chunk (ctid ranges, time slices): kept apart, each row group covers one
        stretch, so its time statistics stay narrow and readers (a restore of a day, DuckDB, Spark) skip the others."""
        for key, rows in self.spec.split(batch, self.chunk_start):
            if rows.num_rows:
                self._streams.add(stream)
                slot = (key, stream)
                self._buffers.setdefault(slot, []).append(rows)
                self._buffered[slot] = self._buffered.get(slot, 0) + rows.num_rows
                if self._buffered[slot] >= self.row_group_rows:
                    self._flush(slot, self.row_group_rows)
        while sum(self._buffered.values()) >= self.row_group_rows * len(self._streams):  # memory stays bounded
            fullest = max(self._buffered, key=lambda k: self._buffered[k])
            self._flush(fullest, self.row_group_rows)

    def _flush(self, slot: tuple[PartitionKey, int], limit: int | None = None) -> None:
        """Write up to `limit` buffered rows of one partition and stream as one row group."""
        import pyarrow as pa

        key = slot[0]
        buffered, take, kept = self._buffers.pop(slot, []), [], []
        remaining = limit if limit is not None else self._buffered.get(slot, 0)
        for batch in buffered:
            if remaining <= 0:
                kept.append(batch)
            elif batch.num_rows <= remaining:
                take.append(batch)
                remaining -= batch.num_rows
            else:
                take.append(batch.slice(0, remaining))
                kept.append(batch.slice(remaining))
                remaining = 0
        if kept:
            self._buffers[slot] = kept
        table = pa.Table.from_batches(take, schema=self.schema)
        self._buffered[slot] = self._buffered.get(slot, 0) - table.num_rows
        if not self._buffered[slot]:
            del self._buffered[slot]
        if not table.num_rows:
            return
        handle = self._open.get(key) or self._open_file(key)
        handle.writer.write_table(table, row_group_size=table.num_rows)
        handle.rows += table.num_rows
        handle.row_groups += 1
        if handle.sink.size >= self.max_file_bytes:
            self._close_file(key)

    def _open_file(self, key: PartitionKey) -> _OpenFile:
        import pyarrow.parquet as pq

        part = self._parts.get(key, 0)
        self._parts[key] = part + 1
        staging = f"{self.staging_dir}/{self.spec.folder(key).replace('/', '.')}-{part:03d}.parquet"
        sink = self.lake.open_write(staging)
        writer = pq.ParquetWriter(sink, self.schema, compression="zstd", compression_level=self.zstd_level,
                                  store_schema=True, **encoding_options(self.schema, self.encodings))
        handle = _OpenFile(key, part, staging, sink, writer)
        self._open[key] = handle
        return handle

    def _close_file(self, key: PartitionKey) -> None:
        handle = self._open.pop(key)
        handle.writer.close()
        handle.sink.close()
        final = self.layout.data_file(self.spec.folder(key), self.token, handle.part)
        self.files.append(WrittenFile(
            key=key, part=handle.part, staging=handle.staging, final=final, rows=handle.rows, bytes=handle.sink.size,
            sha256=handle.sink.digest.hexdigest(), row_groups=handle.row_groups,
            stats=file_stats(handle.writer.writer.metadata, self.schema),
        ))

    def close(self) -> list[WrittenFile]:
        """Flush every buffer and close every file; an empty chunk yields no file."""
        for slot in sorted(self._buffers, key=lambda s: s[1]):
            while self._buffered.get(slot):
                self._flush(slot, self.row_group_rows)
        for key in list(self._open):
            self._close_file(key)
        return self.files

    # -- verify, publish, abort -----------------------------------------------------------------
    def verify(self) -> None:
        """Read every staged file back: size, SHA-256, footer rows, schema and embedded manifest."""
        import pyarrow.parquet as pq

        for entry in self.files:
            entry.parts = verify_file(self.lake, entry.staging, entry.bytes, entry.sha256, entry.rows, self.schema, pq)

    def publish(self) -> list[DataFile]:
        """Move the staged files to their visible names; return them as the Delta log will record them."""
        out = []
        for entry in self.files:
            self.lake.move(entry.staging, entry.final)
            self.published.append(entry.final)
            if len(self.published) == 1:
                crash_point("mid_publish")
            out.append(DataFile(path=self.layout.in_table(entry.final), partition_values=self.spec.delta_values(entry.key),
                                size=entry.bytes, rows=entry.rows, sha256=entry.sha256, stats=entry.stats))
        return out

    def abort(self) -> None:
        """Remove every file this attempt wrote (staged or published); the commit did not happen."""
        for key in list(self._open):
            handle = self._open.pop(key)
            try:
                handle.writer.close()
                handle.sink.close()
            except Exception:  # noqa: BLE001 - best effort: the file is deleted next
                pass
        # Best effort: an abort runs while another error is on its way up, and that error is the one to report.
        for path in self.published:
            self.lake.delete_quietly(path)
        try:
            self.lake.delete_tree(self.staging_dir)
        except Exception:  # noqa: BLE001 - see above; a later attempt's sweep removes what stays
            pass


def verify_file(lake: Lake, path: str, size: int, sha256: str, rows: int, schema: pa.Schema | None, pq) -> list:
    """One file read back against what was written (or recorded): size, digest, footer rows, schema, manifest.
    Returns its parts with their SHA-256s (file_parts.py), hashed in the same read."""
    found = lake.size(path)
    if found is None:
        raise VerificationError(f"{path}: missing from the lake")
    if found != size:
        raise VerificationError(f"{path}: {found} bytes in the lake, {size} written")
    with lake.open_read(path) as handle:
        meta = pq.ParquetFile(handle).metadata
    parts = part_bounds(meta, size)
    digest, digests = lake.sha256_parts(path, parts)
    if digest != sha256:
        raise VerificationError(f"{path}: checksum {digest[:12]} in the lake, {sha256[:12]} written")
    if meta.num_rows != rows:
        raise VerificationError(f"{path}: footer says {meta.num_rows} rows, {rows} written")
    if schema is not None and not meta.schema.to_arrow_schema().remove_metadata().equals(schema.remove_metadata()):
        raise VerificationError(f"{path}: schema in the footer differs from the extracted schema")
    if PARQUET_KEY not in (meta.metadata or {}):
        raise VerificationError(f"{path}: embedded manifest missing")
    return recorded(parts, digests)


def file_stats(meta, schema: pa.Schema) -> dict[str, Any]:
    """Delta statistics (nullCount; minValues/maxValues for integer, date and timestamp columns) from a footer.

    Only types whose order is unambiguous get min/max: a wrong bound would make readers skip rows. Columns holding
    an infinity sentinel get no bounds.
    """
    import pyarrow as pa

    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    skip: set[str] = set()
    by_name = {f.name: f for f in schema}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema
            field = by_name.get(name)
            stats = column.statistics
            if field is None or stats is None:
                continue  # nested leaf (lists): no top-level statistics
            nulls[name] = nulls.get(name, 0) + (stats.null_count or 0)
            kind = field.type
            if not (pa.types.is_integer(kind) or pa.types.is_date32(kind) or pa.types.is_timestamp(kind)):
                continue
            if not stats.has_min_max:
                if group.num_rows != (stats.null_count or 0):
                    skip.add(name)
                continue
            lo, hi = stats.min_raw, stats.max_raw
            lows[name] = lo if name not in lows else min(lows[name], lo)
            highs[name] = hi if name not in highs else max(highs[name], hi)
    out: dict[str, Any] = {"nullCount": nulls}
    mins, maxs = {}, {}
    for name, lo in lows.items():
        if name in skip:
            continue
        kind, hi = by_name[name].type, highs[name]
        try:
            bounds = _bounds(kind, lo, hi)
        except (OverflowError, ValueError):  # beyond what a Delta statistic can spell (years outside 1-9999)
            continue
        if bounds is not None:
            mins[name], maxs[name] = bounds
    if mins:
        out["minValues"], out["maxValues"] = mins, maxs
    json.dumps(out)  # fail here, not in the commit, if anything is not JSON
    return out


def _bounds(kind, lo: int, hi: int) -> tuple[Any, Any] | None:
    import pyarrow as pa

    if pa.types.is_timestamp(kind):
        if max(abs(lo), abs(hi)) >= _INT64_MAX or kind.unit != "us":
            return None
        return _iso_us(lo), _iso_us(hi)
    if pa.types.is_date32(kind):
        if max(abs(lo), abs(hi)) >= _INT32_MAX:
            return None
        return _iso_day(lo), _iso_day(hi)
    return lo, hi


def _iso_us(micros: int) -> str:
    value = _EPOCH + timedelta(microseconds=micros)
    if value.year < 1000:
        raise ValueError("year before 1000")
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_day(days: int) -> str:
    value = _EPOCH + timedelta(days=days)
    if value.year < 1000:
        raise ValueError("year before 1000")
    return value.strftime("%Y-%m-%d")
