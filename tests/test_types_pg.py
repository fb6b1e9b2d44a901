"""Type round trip on real PostgreSQL 15: every mapped type, NULLs and special values, read back by pyarrow and DuckDB."""

import datetime
import decimal
import uuid

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared_code.ledger import JobState

from .conftest import engine_for
from .helpers import ledger_jobs

COLUMNS = """
    ts timestamptz NOT NULL,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
    n numeric, n2 numeric(10,2), n50 numeric(50,5),
    t text, vc varchar(10), ch char(4), by bytea, u uuid, j json, jb jsonb,
    d date, tm time, tsn timestamp, iv interval,
    ia int4[], ta text[], fa float8[], da date[],
    mood mood_t, ip inet, cidr_ cidr, mac macaddr, pos positive_int
"""

ROWS = [
    # ordinary values
    """('2020-01-01 00:00:01+00', true, 1, 2, 3, 1.5, 2.25, 123.456, 12.34, 1234567890123456789012345678901234567890.12345,
        'text', 'varchar', 'ab', '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1}', '{"b": [1, 2]}',
        '2019-12-31', '12:34:56.789', '2020-01-01 01:02:03.456789', '1 year 2 mons 3 days 04:05:06.7',
        '{1,NULL,3}', '{"x",NULL,"z z"}', '{1.5,NaN}', '{2020-01-01}',
        'happy', '10.1.2.3/8', '10.0.0.0/8', '08:00:2b:01:02:03', 7)""",
    # special values
    """('2020-01-01 00:00:02+00', false, -32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity', 'NaN', -0.01,
        -0.00001, '', '', '', '\\x', '00000000-0000-0000-0000-000000000000', '[]', '{}',
        'infinity', '00:00:00', '-infinity', '-1 days', '{}', '{}', '{-Infinity}', '{}',
        'sad', '::1', '::/0', '00:00:00:00:00:00', 1)""",
    """('2020-01-01 00:00:03+00', NULL, 32767, 2147483647, 9223372036854775807, '-Infinity', '-Infinity', 'Infinity',
        99999999.99, NULL, 'ünïcødé ☃', NULL, NULL, NULL, NULL, 'null', 'null', '-infinity', '24:00:00', 'infinity',
        '-1 year -2 mons +3 days -04:05:06', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
    # all NULLs
    """('2020-01-01 00:00:04+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
]


@pytest.fixture
def archived(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood_t AS ENUM ('happy', 'sad')")
        conn.execute("CREATE DOMAIN positive_int AS int4 CHECK (VALUE > 0)")
        conn.execute(f"CREATE TABLE typed ({COLUMNS}) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE typed_2020 PARTITION OF typed FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        for row in ROWS:
            conn.execute(f"INSERT INTO typed VALUES {row}")
        conn.execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3")
        source = conn.execute(
            "SELECT ts, b, i2, i4, i8, f4, f8, n::text, n2, n50, t, vc, ch, by, u, j::text, jb::text, "
            "CASE WHEN isfinite(d) THEN d END, CASE WHEN tm <> '24:00' THEN tm END, CASE WHEN isfinite(tsn) THEN tsn END, "
            "iv::text, ia, ta, fa, da::text[], mood::text, ip::text, cidr_::text, mac::text, pos, "
            "isfinite(d), isfinite(tsn) FROM typed ORDER BY ts").fetchall()
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.typed"]) as engine:
        report = engine.run(drop=False)
    assert not report.failed, report.failed
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.ARCHIVED
    return lake / job.lake_paths[0], source


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_arrow_types(archived):
    path, _ = archived
    schema = pq.read_schema(path)
    expect = {
        "b": pa.bool_(), "i2": pa.int16(), "i4": pa.int32(), "i8": pa.int64(), "f4": pa.float32(), "f8": pa.float64(),
        "n": pa.string(), "n2": pa.decimal128(10, 2), "n50": pa.string(), "t": pa.string(),
        "by": pa.binary(), "d": pa.date32(), "tm": pa.string(), "tsn": pa.timestamp("us", tz="UTC"),
        "u": pa.string(), "j": pa.string(), "jb": pa.string(),
        "ts": pa.timestamp("us", tz="UTC"), "iv": pa.string(), "ia": pa.list_(pa.int32()), "mood": pa.string(),
        "ip": pa.string(), "pos": pa.int32(), "da": pa.list_(pa.string()),
    }
    for name, arrow_type in expect.items():
        assert schema.field(name).type == arrow_type, name
    assert schema.field("n2").metadata[b"pg_type"] == b"numeric(10,2)"
    assert schema.field("pos").metadata[b"pg_type"] == b"positive_int"
    # Every column is a type a Delta reader v1 knows: no extension types, no naive timestamps, decimals <= 38 digits.
    from deltalake import Schema

    Schema.from_arrow(schema.remove_metadata())
    assert not [f.name for f in schema if isinstance(f.type, pa.BaseExtensionType)]


def test_values_round_trip(archived):
    path, source = archived
    table = pq.read_table(path)
    finite_rows = [0, 3]  # rows without infinities or 24:00 (Python cannot hold them; DuckDB checks them below)
    names = ["ts", "b", "i2", "i4", "i8", "f4", "f8", "n", "n2", "n50", "t", "vc", "ch", "by", "u", "j", "jb", "d",
             "tm", "tsn", "iv", "ia", "ta", "fa", "da", "mood", "ip", "cidr_", "mac", "pos"]
    for column_index, name in enumerate(names):
        column = table.column(name)
        for row_index, row in enumerate(source):
            expected = row[column_index]
            if name in ("d", "tsn", "tm") and row_index not in finite_rows:
                continue
            actual = column[row_index].as_py()
            if name == "u" and actual is not None:
                actual = uuid.UUID(actual)
            if name == "n50" and actual is not None:
                actual = decimal.Decimal(actual)
            if name == "tm" and actual is not None:
                actual = datetime.time.fromisoformat(actual)
            if name == "tsn" and expected is not None:
                expected = expected.replace(tzinfo=datetime.UTC)  # the wall clock, labelled UTC
            if name == "iv":
                continue  # checked by casting back in PostgreSQL, below
            if name == "ch" and expected is not None:
                expected = expected.ljust(4)
            assert _same(expected, actual), (name, row_index, expected, actual)


def test_duckdb_reads_special_values(archived):
    path, source = archived
    result = duckdb.sql(
        f"SELECT d = 'infinity'::DATE, d = '-infinity'::DATE, tsn = '-infinity'::TIMESTAMP, "
        f"tsn = 'infinity'::TIMESTAMP, isnan(f4), f8 = 'inf'::DOUBLE, iv::INTERVAL, u::VARCHAR, j, "
        f"n2, tm = '24:00:00'::TIME FROM '{path}' ORDER BY ts"
    ).fetchall()
    assert result[1][0] is True and result[1][2] is True
    assert result[2][1] is True and result[2][3] is True
    assert result[1][4] is True and result[1][5] is True
    assert str(result[0][7]) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert result[0][8] == '{"a": 1}'
    assert result[0][9] == decimal.Decimal("12.34")
    assert result[2][10] is True
    assert result[3] == (None,) * 11


def test_decimal_nan_fails_cleanly(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE money (ts timestamptz NOT NULL, amount numeric(10,2)) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE money_old PARTITION OF money FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO money VALUES ('2020-01-02', 1.5), ('2020-01-03', 'NaN')")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.money"]) as engine:
        report = engine.run()
    assert len(report.failed) == 1
    assert "'amount'" in report.failed[0].detail and "numeric(10,2)" in report.failed[0].detail
    assert not list(lake.rglob("*.parquet"))  # staged files were removed, nothing was committed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM money_old").fetchone()[0] == 2
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.FAILED and "amount" in job.last_error


def test_interval_text_casts_back_exactly(archived, pg_dsn):
    path, _ = archived
    table = pq.read_table(path, columns=["ts", "iv"]).to_pylist()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for row in table:
            same = conn.execute("SELECT %s::interval IS NOT DISTINCT FROM iv FROM typed WHERE ts = %s",
                                (row["iv"], row["ts"])).fetchone()[0]
            assert same, row
    parsed = duckdb.sql(f"SELECT iv::INTERVAL FROM '{path}' ORDER BY ts").fetchall()
    assert parsed[1][0].days == -1 and parsed[3][0] is None
