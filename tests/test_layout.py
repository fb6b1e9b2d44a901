from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from shared_code.errors import LayoutError
from shared_code.layout import chunk_layout, escape


def test_hive_layout_and_visible_name():
    layout = chunk_layout("tsdb", "public", "metrics", "_hyper_1_2_chunk",
                          datetime(2023, 1, 5, tzinfo=UTC), datetime(2023, 1, 12, tzinfo=UTC))
    path = layout.data_file(0, 1)
    assert path == "tsdb/public.metrics/year=2023/month=01/20230105T000000Z_20230112T000000Z-hyper_1_2_chunk.parquet"
    assert not path.rsplit("/", 1)[-1].startswith(("_", "."))
    assert layout.manifest().rsplit("/", 1)[-1].startswith("_")
    assert layout.data_file(2, 3).endswith("-hyper_1_2_chunk-p002.parquet")


def test_hidden_working_folders():
    layout = chunk_layout("", "s", "t", "c", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))
    final = layout.data_file(0, 1)
    assert "/_tmp/" in layout.temp_file("tok", final)
    assert "/_superseded/" in layout.superseded("stamp", final)


def test_odd_names_are_escaped_and_reversible():
    odd = 'My "Schema"/../x y.%'
    escaped = escape(odd)
    assert "/" not in escaped and " " not in escaped and ".." not in escaped and '"' not in escaped
    assert unquote(escaped) == odd
    layout = chunk_layout("", odd, "Ünïcode Table", ".hidden", datetime(2020, 5, 1, tzinfo=UTC), None)
    assert "year=2020/month=05" in layout.partition_dir
    assert layout.base_name.endswith("-hidden")


def test_deterministic_and_part_matching():
    args = ("", "s", "t", "c", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))
    a, b = chunk_layout(*args), chunk_layout(*args)
    assert a == b
    assert a.is_part_of(a.data_file(0, 1)) and a.is_part_of(a.data_file(4, 5))
    assert not a.is_part_of(a.manifest())


def test_integer_ranges():
    layout = chunk_layout("", "s", "t", "c", 0, 1000)
    assert layout.partition_dir.endswith("range=0_1000")


def test_empty_name_rejected():
    with pytest.raises(LayoutError):
        escape("")


def test_job_id_keeps_names_unique():
    args = ("", "s", "t", "c", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))
    first, second = chunk_layout(*args, job_id=1), chunk_layout(*args, job_id=2)
    assert first.data_file(0, 1).endswith("-c-j1.parquet") and first.data_file(0, 1) != second.data_file(0, 1)
    assert not first.is_part_of(second.data_file(0, 1))
