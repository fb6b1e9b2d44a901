"""The file writer keeps each extraction stream's rows in row groups of their own: each covers one stretch of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from shared_code.archive.writer import ChunkFileWriter
from shared_code.storage.lake import Lake
from shared_code.storage.layout import chunk_layout
from shared_code.storage.partitioning import PartitionSpec

START = datetime(2020, 1, 1, tzinfo=UTC)


def _batch(first: int, rows: int) -> pa.RecordBatch:
    stamps = [START + timedelta(seconds=i) for i in range(first, first + rows)]
    return pa.record_batch({"ts": pa.array(stamps, pa.timestamp("us", tz="UTC")), "v": pa.array(range(rows), pa.int64())})


def test_streams_interleaved_in_arrival_still_get_row_groups_of_their_own(tmp_path):
    """Two streams read the first and second half of a chunk; their batches arrive interleaved. Every row group holds
    one stream's rows, so the groups' time ranges do not overlap, and every row is written once."""
    lake = Lake((tmp_path / "lake").as_uri())
    layout = chunk_layout("", "public", "t", "c", START, START + timedelta(days=1), 1)
    spec = PartitionSpec.for_table("ts", "timestamp with time zone", ["ts", "v"])
    schema = _batch(0, 1).schema
    writer = ChunkFileWriter(lake, layout, spec, schema, job_id=1, token="t", row_group_rows=1000,
                             max_file_bytes=1 << 30, zstd_level=3)
    for i in range(10):  # stream 0: seconds 0..2999, stream 1: seconds 50000..52999, 300 rows a batch
        writer.write(_batch(i * 300, 300), stream=0)
        writer.write(_batch(50_000 + i * 300, 300), stream=1)
    (written,) = writer.close()
    metadata = pq.ParquetFile(lake.path(written.staging)).metadata
    ranges = sorted((metadata.row_group(g).column(0).statistics.min, metadata.row_group(g).column(0).statistics.max)
                    for g in range(metadata.num_row_groups))
    assert metadata.num_rows == 6000 and metadata.num_row_groups == 6
    assert all(high < next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:], strict=False))
    assert all(metadata.row_group(g).num_rows == 1000 for g in range(6))
