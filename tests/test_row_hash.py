"""The restore proof's pure parts: the row hash (order-independent, additive, sensitive to every value) and the time filter."""

import decimal

import pyarrow as pa
import pytest

from shared_code.row_hash import RowSetHash, UnhashableType


def _table() -> pa.Table:
    return pa.table({
        "i": pa.array([1, None, 3, 4], pa.int64()),
        "s": pa.array(["a", "", None, "ab" * 3000], pa.string()),
        "f": pa.array([float("nan"), -0.0, 0.0, float("inf")]),
        "b": pa.array([True, False, None, True]),
        "y": pa.array([b"\x00", b"", None, b"\xff" * 3], pa.binary()),
        "ts": pa.array([0, None, 9_223_372_036_854_775_807, -5], pa.timestamp("us", tz="UTC")),
        "d": pa.array([0, 1, None, 2_147_483_647], pa.date32()),
        "n": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-1.23"), decimal.Decimal("0")], pa.decimal128(10, 2)),
        "li": pa.array([[1, None], None, [], [None]], pa.list_(pa.int32())),
        "ls": pa.array([["x", None], [], None, ["", ""]], pa.list_(pa.string())),
    })


def _digest(*parts) -> str:
    h = RowSetHash()
    for part in parts:
        h.update(part)
    return h.hexdigest


def test_order_of_rows_columns_and_batches_does_not_matter():
    table = _table()
    reversed_rows = table.take([3, 2, 1, 0])
    reordered_columns = table.select(list(reversed(table.column_names)))
    batches = table.to_batches(max_chunksize=1)
    assert _digest(table) == _digest(reversed_rows) == _digest(reordered_columns) == _digest(*batches)
    assert _digest(table.slice(1, 2)) == _digest(reversed_rows.slice(1, 2))  # sliced arrays read at their offset


def test_every_changed_value_changes_the_hash():
    table = _table()
    base = _digest(table)
    for name in table.column_names:
        column = table.column(name)
        for a, b in ((0, 1), (0, 2), (1, 3)):
            order = list(range(len(column)))
            order[a], order[b] = order[b], order[a]
            changed = table.set_column(table.column_names.index(name), name, column.take(order))
            assert _digest(changed) != base, (name, a, b)  # the same values, in other rows


def test_distinctions_that_matter_for_postgresql():
    def one(values, kind):
        return _digest(pa.table({"c": pa.array(values, kind)}))

    assert one([""], pa.string()) != one([None], pa.string())
    assert one([[]], pa.list_(pa.int32())) != one([None], pa.list_(pa.int32()))
    assert one([[None]], pa.list_(pa.int32())) != one([[]], pa.list_(pa.int32()))
    assert one([["ab"]], pa.list_(pa.string())) != one([["a", "b"]], pa.list_(pa.string()))
    assert one([-0.0], pa.float64()) != one([0.0], pa.float64())
    assert one([0], pa.int32()) != one([None], pa.int32())


def test_a_row_moved_between_columns_or_duplicated_is_detected():
    a = pa.table({"x": [1, 2], "y": [2, 1]})
    b = pa.table({"x": [1, 2], "y": [1, 2]})  # same values per column, different rows
    assert _digest(a) != _digest(b)
    assert _digest(pa.table({"x": [1, 1]})) != _digest(pa.table({"x": [1]}))


def test_additive():
    table = _table()
    whole, first, rest = RowSetHash(), RowSetHash(), RowSetHash()
    whole.update(table)
    first.update(table.slice(0, 1))
    rest.update(table.slice(1))
    assert (first + rest) == whole and (whole - first) == rest and (whole - first).rows == 3


def test_row_words_find_present_rows():
    table = _table()
    words = RowSetHash().row_words(table)
    again = RowSetHash().row_words(table.take([2, 0]))
    assert list(again) == [words[2], words[0]] and len(set(words.tolist())) == 4


def test_unknown_types_are_refused():
    with pytest.raises(UnhashableType, match="no row hash"):
        RowSetHash().update(pa.table({"m": pa.array([{"a": 1}])}))


def test_time_filter_speaks_the_same_range_in_arrow_and_sql():
    from datetime import UTC, datetime

    from shared_code.restore import TimeFilter

    low, high = datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    tz = TimeFilter.for_range("t", "timestamp(3) with time zone", low, high)
    assert tz.where() == (" WHERE \"t\" >= '2024-01-01T12:00:00+00:00'::timestamptz "
                          "AND \"t\" < '2024-01-03T00:00:00+00:00'::timestamptz")
    wall = TimeFilter.for_range("t", "timestamp without time zone", low, None)
    assert wall.where() == " WHERE \"t\" >= '2024-01-01T12:00:00'::timestamp"
    day = TimeFilter.for_range("d", "date", low, high)  # a date is in range when its midnight is
    assert day.where() == " WHERE \"d\" >= '2024-01-02'::date AND \"d\" < '2024-01-03'::date"
    dates = pa.record_batch({"d": pa.array([datetime(2024, 1, d).date() for d in (1, 2, 3)], pa.date32())})
    assert day.apply(dates).column("d").to_pylist() == [datetime(2024, 1, 2).date()]
    stamps = pa.record_batch({"t": pa.array([low, high, datetime(2024, 1, 2, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))})
    assert tz.apply(stamps).num_rows == 2
    ticks = TimeFilter.for_range("k", "bigint", 10, 20).narrowed(15, None)
    assert (ticks.low, ticks.high, ticks.where()) == (15, 20, ' WHERE "k" >= 15 AND "k" < 20')
    assert TimeFilter.for_range("k", "bigint", 10, 20).narrowed(20, 30).empty
    with pytest.raises(Exception, match="must be integers"):
        TimeFilter.for_range("k", "integer", low, None)


def test_string_words_equal_the_position_keyed_formula_below_and_beyond_the_lookup_table():
    """value_words keys a string's bytes by table lookup for the first 256 positions and computes beyond: both must be
    exactly the formula, mix(byte ^ mix(position + POSITION)) summed, so the hash of a string never depends on how
    it was computed."""
    import numpy as np
    import pyarrow as pa

    from shared_code import row_hash as rh

    def reference(text: bytes) -> int:
        with np.errstate(over="ignore"):
            data = np.frombuffer(text, dtype=np.uint8).astype(np.uint64)
            position = np.arange(len(text), dtype=np.uint64)
            total = rh._mix(data ^ rh._mix(position + rh._POSITION)).sum(dtype=np.uint64)
            return int(rh._mix(np.array([total ^ rh._mix(np.uint64(len(text)) + rh._LENGTH)], dtype=np.uint64))[0])

    values = [b"", b"a", bytes(range(256)), b"x" * 255, b"y" * 256, b"z" * 257, "é☃ünï".encode() * 100]
    words = rh.value_words(pa.array(values, pa.binary()))
    assert [int(w) for w in words] == [reference(v) for v in values]


def test_a_repeating_string_column_hashes_each_value_as_it_would_alone():
    """Columns that repeat their values are hashed once per distinct value: the same word per value as one by one."""
    import numpy as np
    import pyarrow as pa

    from shared_code.row_hash import value_words

    values = [f"label-{i % 50}" if i % 13 else None for i in range(20_000)]
    words = value_words(pa.array(values))
    alone = {v: value_words(pa.array([v], pa.string()))[0] for v in set(values)}
    assert np.array_equal(words, np.array([alone[v] for v in values], dtype=np.uint64))
