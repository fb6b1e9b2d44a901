"""A restore checks and decodes only the parts of a file it needs (footer, row groups), each against the ledger's
SHA-256, in the read that fetched it; the archive records those parts when it reads the file back."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared_code.errors import VerificationError
from shared_code.restore import restore_range
from shared_code.storage.file_parts import VerifiedFile, digest_parts, part_bounds, recorded
from shared_code.storage.lake import Lake

from .conftest import engine_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # pinned: the rows are from 2020, so the chunk is due whatever today is


def _file(tmp_path, groups: int = 4) -> tuple[str, pa.Table]:
    table = pa.table({"ts": pa.array(range(groups * 1000), pa.int64()), "label": [f"r{i % 37}" for i in range(groups * 1000)]})
    path = str(tmp_path / "f.parquet")
    pq.write_table(table, path, row_group_size=1000)
    return path, table


def _verified(path: str, reads: list[tuple[int, int]] | None = None) -> VerifiedFile:
    size = Path(path).stat().st_size
    parts = part_bounds(pq.ParquetFile(path).metadata, size)
    with open(path, "rb") as stream:
        _, digests = digest_parts(lambda: stream.read(1000), parts)  # blocks that straddle the parts

    def read_range(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append((offset, length))
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read(length)
    return VerifiedFile(path, size, recorded(parts, digests), read_range)


def test_parts_cover_the_file_and_each_digest_is_its_bytes(tmp_path):
    path, _ = _file(tmp_path)
    data = Path(path).read_bytes()
    parts = part_bounds(pq.ParquetFile(path).metadata, len(data))
    assert len(parts) == 4 + 2 and parts[0] == (0, 4)  # the magic, four row groups, the footer
    assert [o for o, _ in parts] == sorted(o for o, _ in parts) and sum(n for _, n in parts) == len(data)
    blocks = iter([data[i:i + 777] for i in range(0, len(data), 777)] + [b""])
    whole, digests = digest_parts(lambda: next(blocks), parts)
    assert whole == hashlib.sha256(data).hexdigest()
    assert digests == [hashlib.sha256(data[o:o + n]).hexdigest() for o, n in parts]


def test_reading_one_row_group_fetches_only_it_and_the_footer(tmp_path):
    path, table = _file(tmp_path)
    reads: list[tuple[int, int]] = []
    verified = _verified(path, reads)
    metadata = pq.read_metadata(pa.BufferReader(verified.footer()))
    assert pq.ParquetFile(verified, metadata=metadata).read_row_group(2).equals(table.slice(2000, 1000))
    assert len(reads) == 2 and reads[1] == verified.parts[3][:2]  # the footer, then row group 2's part
    every = pa.concat_tables(pq.ParquetFile(verified, metadata=metadata).read_row_group(i) for i in range(4))
    assert every.equals(table)


def test_a_changed_row_group_is_refused_when_read_and_only_then(tmp_path):
    path, table = _file(tmp_path)
    verified = _verified(path)
    offset, length, _ = verified.parts[2]  # row group 1
    data = bytearray(Path(path).read_bytes())
    data[offset + length // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    metadata = pq.read_metadata(pa.BufferReader(verified.footer()))
    assert pq.ParquetFile(verified, metadata=metadata).read_row_group(0).equals(table.slice(0, 1000))
    with pytest.raises(VerificationError, match="row group 1 .* differs from what was archived"):
        pq.ParquetFile(verified, metadata=metadata).read_row_group(1)


def test_a_changed_footer_or_parts_that_miss_bytes_are_refused(tmp_path):
    path, _ = _file(tmp_path)
    verified = _verified(path)
    data = bytearray(Path(path).read_bytes())
    data[-20] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="the footer .* differs"):
        verified.footer()
    with pytest.raises(VerificationError, match="parts do not cover"):
        VerifiedFile(path, len(data), verified.parts[:-1], lambda o, n: b"")


@pytest.fixture
def archived(pg_dsn, tmp_path):
    """A month partition of 20,000 rows in 1,000-row groups, archived and dropped."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE parts (ts timestamptz NOT NULL, v float8, t text) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE parts_01 PARTITION OF parts FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO parts SELECT '2020-01-01'::timestamptz + i * interval '2 minutes', i / 3.0, 'x' || i "
                     "FROM generate_series(0, 19999) i")  # 2020-01-01 .. 2020-01-28
        conn.execute("CREATE TABLE original AS SELECT * FROM parts")
    with engine_for(pg_dsn, tmp_path / "lake", now=NOW, partitioned_tables=["public.parts"],
                    row_group_rows=1000) as engine:
        assert not engine.run().failed
        (job,) = engine.ledger.all_jobs()
        assert list(job.file_parts) == job.lake_paths and len(job.file_parts[job.lake_paths[0]]) == 20 + 2
        yield engine, job


def test_a_range_restore_reads_only_its_row_groups_and_proves_them(archived, pg_dsn, monkeypatch):
    engine, job = archived
    reads: list[tuple[str, int, int]] = []
    real = Lake.read_range
    monkeypatch.setattr(Lake, "read_range", lambda self, p, o, n: reads.append((p, o, n)) or real(self, p, o, n))
    monkeypatch.setattr(Lake, "sha256", lambda *a: pytest.fail("a restore with recorded parts hashes no whole file"))
    low, high = datetime(2020, 1, 10, tzinfo=UTC), datetime(2020, 1, 11, tzinfo=UTC)  # 720 rows: one or two groups
    result = restore_range(engine, "public.parts", low, high)
    size = sum(p[1] for p in job.file_parts[job.lake_paths[0]])
    assert result.rows == 720 and 2 <= len(reads) <= 3 and sum(n for _, _, n in reads) < size / 5
    with psycopg.connect(pg_dsn) as conn:
        differ = conn.execute(f"SELECT count(*) FROM ((SELECT * FROM original WHERE ts >= %s AND ts < %s EXCEPT ALL "
                              f"TABLE {result.target}) UNION ALL (TABLE {result.target} EXCEPT ALL SELECT * FROM "
                              "original WHERE ts >= %s AND ts < %s)) d", (low, high, low, high)).fetchone()[0]
    assert differ == 0


def test_a_changed_row_group_stops_the_restore_that_reads_it_and_the_check_finds_it(archived, pg_dsn):
    engine, job = archived
    path = job.lake_paths[0]
    offset, length, _ = job.file_parts[path][1 + 12]  # row group 12: 2020-01-17 16:00 .. 2020-01-19 01:18
    local = engine.lake.path(path)
    data = bytearray(Path(local).read_bytes())
    data[offset + length // 2] ^= 0x01
    Path(local).write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="row group 12 .* differs from what was archived"):
        restore_range(engine, "public.parts", datetime(2020, 1, 17, tzinfo=UTC), datetime(2020, 1, 18, tzinfo=UTC))
    elsewhere = restore_range(engine, "public.parts", datetime(2020, 1, 2, tzinfo=UTC),
                              datetime(2020, 1, 3, tzinfo=UTC))  # reads none of the changed bytes
    assert elsewhere.rows == 720
    assert any("checksum differs" in p for p in engine.check_archive(job))  # the drill and verify still see it
