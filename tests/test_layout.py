from datetime import UTC, datetime

import pytest

from shared_code.errors import LayoutError
from shared_code.storage.layout import chunk_layout, escape, table_dir, unescape
from shared_code.storage.partitioning import PartitionSpec


def test_table_folder_and_visible_data_names():
    layout = chunk_layout("tsdb", "public", "metrics", "_hyper_1_2_chunk",
                          datetime(2023, 1, 5, tzinfo=UTC), datetime(2023, 1, 12, tzinfo=UTC), job_id=17)
    assert layout.table_dir == "tsdb/public.metrics"
    path = layout.data_file("year=2023/month=1", "0123abcd", 0)
    assert path == ("tsdb/public.metrics/year=2023/month=1/"
                    "20230105T000000Z_20230112T000000Z-hyper_1_2_chunk-j17-0123abcd-p000.parquet")
    assert not path.rsplit("/", 1)[-1].startswith(("_", "."))
    assert layout.in_table(path) == "year=2023/month=1/" + path.rsplit("/", 1)[-1]
    assert layout.in_lake(layout.in_table(path)) == path


def test_working_files_are_hidden_from_readers():
    layout = chunk_layout("", "s", "t", "c", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC), 3)
    for path in (layout.manifest(), layout.staging_file(3, "tok", 0)):
        relative = path.removeprefix(layout.table_dir + "/")
        assert relative.startswith("_"), path
    with pytest.raises(LayoutError):
        layout.in_table("elsewhere/x.parquet")


def test_odd_names_are_escaped_and_reversible():
    odd = 'My "Schema"/../x y.%~'
    escaped = escape(odd)
    assert all(ch.isalnum() or ch in "_-~" for ch in escaped)
    assert unescape(escaped) == odd
    assert unescape(escape("Ünïcode Table")) == "Ünïcode Table"
    assert escape("a.b") != escape("a_b") and "." not in escape("a.b")  # the schema.table dot stays unambiguous
    assert table_dir("", odd, "t").count(".") == 1
    layout = chunk_layout("", odd, "Ünïcode Table", ".hidden", datetime(2020, 5, 1, tzinfo=UTC), None)
    assert layout.stem.endswith("-hidden")


def test_job_file_matching():
    args = ("", "s", "t", "c", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))
    first, second = chunk_layout(*args, job_id=1), chunk_layout(*args, job_id=11)
    assert chunk_layout(*args, job_id=1) == first
    mine = first.data_file("year=2023/month=1", "0a0b0c0d", 4)
    assert first.is_job_file(mine) and first.is_job_file(mine.rsplit("/", 1)[-1])
    assert not second.is_job_file(mine) and not first.is_job_file(second.data_file("year=2023/month=1", "0a0b0c0d", 0))
    assert not first.is_job_file(first.manifest())


def test_integer_ranges():
    layout = chunk_layout("", "s", "t", "c", -1000, 1000, 5)
    assert layout.stem == "-1000_1000-c-j5"


def test_empty_name_rejected():
    with pytest.raises(LayoutError):
        escape("")


def test_partition_folders_and_delta_values():
    spec = PartitionSpec.for_table("ts", "timestamp with time zone", ["ts", "v"])
    assert spec.columns == ("year", "month")
    assert spec.folder((2024, 1)) == "year=2024/month=1"
    assert spec.delta_values((2024, 1)) == {"year": "2024", "month": "1"}
    assert spec.folder((None, None)) == "year=__HIVE_DEFAULT_PARTITION__/month=__HIVE_DEFAULT_PARTITION__"
    taken = PartitionSpec.for_table("ts", "date", ["ts", "year"])
    assert taken.columns == ("archive_year", "archive_month")
    integer = PartitionSpec.for_table("t", "bigint", ["t"])
    assert integer.integer and integer.folder((-5000,)) == "range_start=-5000"


def test_split_by_utc_month_including_infinities():
    import pyarrow as pa

    spec = PartitionSpec.for_table("ts", "timestamp with time zone", ["ts"])
    micros = [int(datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1e6),
              int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1e6), 2**63 - 1, None]
    batch = pa.record_batch([pa.array(micros, pa.timestamp("us", tz="UTC"))], names=["ts"])
    parts = {key: rows.num_rows for key, rows in spec.split(batch)}
    assert parts == {(2023, 12): 1, (2024, 1): 1, (None, None): 2}
