"""PartitionSpec.split: every row lands in the UTC month of its own time value, on both its paths."""

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from shared_code.storage.partitioning import PartitionSpec

SPEC = PartitionSpec.for_table("ts", "timestamp with time zone", ["ts", "v"])


def _batch(values, kind=pa.timestamp("us", tz="UTC")) -> pa.RecordBatch:
    return pa.record_batch([pa.array(values, kind), pa.array(range(len(values)), pa.int64())], names=["ts", "v"])


def _months(pairs) -> dict:
    return {key: sorted(rows.column("v").to_pylist()) for key, rows in pairs}


def test_a_batch_within_one_month_is_one_partition():
    batch = _batch([datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)])
    assert _months(SPEC.split(batch)) == {(2024, 2): [0, 1]}


def test_a_batch_across_months_and_years_is_split_by_each_row():
    values = [datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
              datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC)]
    assert _months(SPEC.split(_batch(values))) == {(2023, 12): [0, 2], (2024, 1): [1], (2024, 3): [3]}


def test_nulls_and_infinities_go_to_the_null_partition():
    top = pa.scalar(9_223_372_036_854_775_807, pa.int64())
    raw = pa.array([1_700_000_000_000_000, None, 1_700_000_000_000_001], pa.int64())
    values = pc.if_else(pa.array([False, False, True]), top, raw).view(pa.timestamp("us", tz="UTC"))
    batch = pa.record_batch([values, pa.array([0, 1, 2], pa.int64())], names=["ts", "v"])
    assert _months(SPEC.split(batch)) == {(2023, 11): [0], (None, None): [1, 2]}


def test_years_beyond_python_datetime_take_the_general_path():
    far = pa.array([253_402_300_800_000_000, 253_402_300_800_000_001], pa.int64()).view(pa.timestamp("us", tz="UTC"))
    batch = pa.record_batch([far, pa.array([0, 1], pa.int64())], names=["ts", "v"])
    assert _months(SPEC.split(batch)) == {(10000, 1): [0, 1]}


def test_dates():
    spec = PartitionSpec.for_table("day", "date", ["day", "v"])
    batch = pa.record_batch([pa.array([date(2020, 2, 29), date(2020, 3, 1)]), pa.array([0, 1], pa.int64())],
                            names=["day", "v"])
    assert _months(spec.split(batch)) == {(2020, 2): [0], (2020, 3): [1]}
    one = pa.record_batch([pa.array([date(2020, 3, 1), date(2020, 3, 31)]), pa.array([0, 1], pa.int64())],
                          names=["day", "v"])
    assert _months(spec.split(one)) == {(2020, 3): [0, 1]}
