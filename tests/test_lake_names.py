"""Lake column names every promised reader accepts, with the PostgreSQL names kept and used by restore and query.

Real native TimescaleDB 2.28.3 and a local lake; the clock is pinned, the data lies in 2020 and late 2025.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shared_code import lake_columns
from shared_code.lake_columns import assign, derive, portable, reader_problems
from shared_code.live_query import run_live_query
from shared_code.query import run_query
from shared_code.restore import restore_range
from shared_code.storage.lake import Lake

from .conftest import ROOT, cli_env, engine_for, settings_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORIGINAL = ["Start At", "Temp (C)", "a;b", "x=y", "k,v", "Value", "value", "year", "Tag List"]
EXPECTED = {"Start At": "start_at", "Temp (C)": "temp_c", "a;b": "a_b", "x=y": "x_y", "k,v": "k_v",
            "Value": "Value", "value": "value_2", "year": "year", "Tag List": "tag_list"}


# -- the rule, pure ------------------------------------------------------------------------------------------------
def test_names_readers_take_are_kept_and_others_derived():
    assert assign(ORIGINAL) == EXPECTED
    assert derive("Température (°C)") == "temperature_c"
    assert derive("2nd reading") == "c_2nd_reading"
    assert derive("((()))") == "c"
    assert derive("x" * 300) == "x" * lake_columns.MAX_LENGTH
    assert all(portable(n) for n in assign(["a b", "A_B", "a-b", "ä b", "1"]).values())


def test_the_names_are_unique_ignoring_case_whatever_the_order():
    for columns in (["Value", "value", "VALUE"], ["value", "Value"], ["a b", "a_b", "A B"]):
        names = list(assign(columns).values())
        assert len({n.casefold() for n in names}) == len(names)
        assert reader_problems(names) == []
    assert assign(["value", "Value"]) == {"value": "value", "Value": "value_2"}
    assert assign(["a b", "a_b"]) == {"a b": "a_b_2", "a_b": "a_b"}  # a name that is fine keeps it


def test_an_existing_lake_name_never_changes_and_is_never_reused():
    existing = {"Start At": "Start At", "gone": "start_at"}  # an old table, and a column since dropped from the source
    names = assign(["Start At", "start at", "New Col"], existing, reserved=["Start At", "start_at", "year", "month"])
    assert names == {"Start At": "Start At", "start at": "start_at_2", "New Col": "new_col"}
    assert assign(["Year"], reserved=["year", "month"]) == {"Year": "year_2"}  # clear of the partition columns


def test_reader_problems_name_the_characters_and_the_case_clashes():
    problems = reader_problems(["Start At", "ok", "OK", "x=y"])
    assert problems == ["'Start At' holds ' '", "'ok' and 'OK' are the same name ignoring case", "'x=y' holds '='"]


# -- a real hypertable -----------------------------------------------------------------------------------------------
def _make_table(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f'''CREATE TABLE {table} ("Start At" timestamptz NOT NULL, "Temp (C)" float8, "a;b" int4, "x=y" text,
                     "k,v" numeric(10,2), "Value" int4, "value" int4, "year" int4, "Tag List" int4[])''')
    conn.execute(f"SELECT create_hypertable('{table}', by_range('Start At', INTERVAL '7 days'))")
    conn.execute(f"""INSERT INTO {table} SELECT '2020-01-01'::timestamptz + i * interval '53 minutes', (i % 90)::float8,
                     i % 7, 'r' || i, (i % 1000) / 4.0, i, -i, 2020, ARRAY[i, i + 1]
                     FROM generate_series(0, 2999) i""")
    # one value a Parquet list cannot hold: archived as exact text in the list's companion column
    conn.execute(f"""INSERT INTO {table} VALUES ('2020-01-03 00:00:00+00', 1, 1, 'matrix', 1, 1, 1, 2020,
                     '{{{{1,2}},{{3,4}}}}')""")
    conn.execute(f"""INSERT INTO {table} SELECT '2025-12-20'::timestamptz + i * interval '17 minutes', 1, 2, 'hot', 3,
                     4, 5, 2025, ARRAY[6] FROM generate_series(0, 499) i""")


@pytest.fixture
def odd_names(native_tsdb, tmp_path):
    box = native_tsdb
    table = f"{box.schema}.odd_names"
    with box.connect() as conn:
        _make_table(conn, table)
        conn.execute(f"CREATE TABLE public.odd_copy AS SELECT * FROM {table}")
    return box, table, tmp_path / "lake", {"ledger_schema": box.ledger, "include": [table]}


def _delta(lake_dir: Path) -> DeltaTable:
    (log,) = list(lake_dir.glob("*/_delta_log"))
    return DeltaTable(str(log.parent))


def _data_fields(table: DeltaTable) -> list:
    partitions = set(table.metadata().partition_columns)
    return [f for f in table.schema().fields if f.name not in partitions and "text_of" not in (f.metadata or {})]


def test_odd_names_archive_under_safe_names_and_come_back_under_their_own(odd_names):
    box, table, lake_dir, overrides = odd_names
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        report = engine.run()
    assert report.steps and not report.failed, [s.detail for s in report.steps if s.outcome == "failed"]

    delta = _delta(lake_dir)
    names = [f.name for f in delta.schema().fields]
    assert reader_problems(names) == [] and all(portable(n) for n in names)
    assert {f.metadata["pg_name"]: f.name for f in _data_fields(delta)} == EXPECTED  # originals recorded
    assert list(delta.metadata().partition_columns) == ["archive_year", "archive_month"]  # clear of "year"
    assert "tag_list__pg_text" in names
    files = [p for p in lake_dir.rglob("*.parquet") if "_delta_log" not in p.parts]
    assert files
    for path in files:  # every file, not only the log, uses the safe names
        stored = pq.read_schema(path)
        assert set(stored.names) <= set(names)
        assert {stored.field(n).metadata[b"pg_name"].decode() for n in stored.names} <= set(ORIGINAL)

    with box.connect() as conn:
        recorded = conn.execute(f"SELECT columns, manifest_path FROM {box.ledger}.jobs WHERE state = 'dropped'").fetchall()
        assert recorded and conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 500  # only the hot rows
    for columns, manifest_path in recorded:
        assert {c["name"]: c["lake_name"] for c in columns} == EXPECTED
        manifest = json.loads(Lake(settings_for(box.dsn, lake_dir).lake_url).read_bytes(manifest_path))
        assert {c["name"]: c["lake_name"] for c in manifest["columns"]} == EXPECTED

    low, high = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 5, 1, tzinfo=UTC)  # every archived row
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        result = restore_range(engine, table, low, high, into=f"{box.schema}.back")
    assert result.rows == 3001 and all(c.status == "restored" for c in result.chunks)
    with box.connect() as conn:
        restored_columns = [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (f"{box.schema}.back",)).fetchall()]
        assert restored_columns == ORIGINAL
        window = """WHERE "Start At" >= '2020-01-01' AND "Start At" < '2020-05-01'"""
        for left, right in ((f"public.odd_copy {window}", f"{box.schema}.back"),
                            (f"{box.schema}.back", f"public.odd_copy {window}")):
            assert conn.execute(f"SELECT count(*) FROM (SELECT * FROM {left} EXCEPT ALL "
                                f"SELECT * FROM {right}) d").fetchone()[0] == 0
        expected = conn.execute(f"""SELECT count(*), sum("Temp (C)")::bigint, sum("a;b"), sum("k,v"), sum("Value"),
                                    sum("value") FROM public.odd_copy {window}""").fetchone()
        everything = conn.execute("""SELECT count(*), sum("Temp (C)")::bigint, sum("a;b"), sum("Value"), sum("value")
                                     FROM public.odd_copy""").fetchone()

    lake = Lake(settings_for(box.dsn, lake_dir).lake_url)
    columns, rows = run_query(lake, "SELECT * FROM odd_names LIMIT 1")
    # DuckDB matches names ignoring case: the second of "Value" and "value" shows as value_1, as its postgres scanner
    # shows it for the live table
    assert columns[:len(ORIGINAL)] == ["Start At", "Temp (C)", "a;b", "x=y", "k,v", "Value", "value_1", "year",
                                       "Tag List"]
    _, rows = run_query(lake, 'SELECT count(*), sum("Temp (C)")::BIGINT, sum("a;b"), sum("k,v"), sum("Value"), '
                              'sum(value_1) FROM odd_names')
    assert [int(v) for v in rows[0]] == [int(v) for v in expected]
    _, mapping = run_query(lake, "SELECT column_name, lake_name, pg_type FROM tsarchive_columns WHERE role = 'column'")
    assert {name: stored for name, stored, _ in mapping} == EXPECTED
    assert dict((name, kind) for name, _, kind in mapping)["k,v"] == "numeric(10,2)"

    settings = settings_for(box.dsn, lake_dir, **overrides)
    live = run_live_query(settings, lake, 'SELECT count(*), sum("Temp (C)")::BIGINT, sum("a;b"), sum("Value"), '
                                          f'sum(value_1) FROM {table}')
    assert [int(v) for v in live.rows[0]] == [int(v) for v in everything]
    assert live.tables[table]["chunks"] > 0  # the archived rows came from the lake, under their own names


def test_a_column_added_later_gets_a_safe_name_and_old_rows_read_null(odd_names):
    box, table, lake_dir, overrides = odd_names
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    before = {f.metadata["pg_name"]: f.name for f in _data_fields(_delta(lake_dir))}
    with box.connect() as conn:
        conn.execute(f'ALTER TABLE {table} ADD COLUMN "New Col" int4, ADD COLUMN "start at" int4, '
                     'ADD COLUMN "Archive_Year" int4')
        conn.execute(f"""INSERT INTO {table} ("Start At", "Temp (C)", "New Col", "start at", "Archive_Year")
                         SELECT '2020-06-01'::timestamptz + i * interval '1 hour', 2, i, -i, 1 FROM generate_series(0, 99) i""")
    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    delta = _delta(lake_dir)
    after = {f.metadata["pg_name"]: f.name for f in _data_fields(delta)}
    assert {k: after[k] for k in before} == before  # no lake name changed
    assert after["New Col"] == "new_col"
    assert after["start at"] == "start_at_2"  # "start_at" is "Start At"'s
    assert after["Archive_Year"] == "archive_year_2"  # clear of the partition column archive_year
    assert reader_problems(f.name for f in delta.schema().fields) == []

    lake = Lake(settings_for(box.dsn, lake_dir).lake_url)
    # "start at" equals "Start At" ignoring case: DuckDB shows it as "start at_1"
    _, rows = run_query(lake, 'SELECT count(*) FILTER (WHERE "New Col" IS NULL), count("New Col"), sum("New Col"), '
                              'sum("start at_1") FROM odd_names')
    assert rows[0] == (3001, 100, sum(range(100)), -sum(range(100)))


# -- a table archived before lake names (the CLI of ae23b9c, the last revision without them) ------------------------
BEFORE = "ae23b9c"
LAUNCHER = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
            "sys.path.insert(0, sys.argv.pop(1)); from shared_code.cli import main; main()")


@pytest.fixture(scope="module")
def cli_before_lake_names(tmp_path_factory) -> Iterator[list[str]]:
    """The tsarchive CLI of the revision before lake names, from a git worktree, run by this interpreter."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"revision {BEFORE} is not in this clone (a shallow clone): `git fetch --unshallow` to run this")
    worktree = tmp_path_factory.mktemp("before") / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(worktree), BEFORE],
                   check=True, capture_output=True)
    yield [sys.executable, "-c", LAUNCHER, str(worktree)]
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)


@pytest.mark.scenario("a table archived before lake names keeps reading, restoring and growing")
def test_a_table_archived_before_lake_names_keeps_working(native_tsdb, tmp_path, cli_before_lake_names, caplog):
    box = native_tsdb
    table = f"{box.schema}.old_names"
    lake_dir = tmp_path / "lake"
    overrides = {"ledger_schema": box.ledger, "include": [table]}
    with box.connect() as conn:
        conn.execute(f'CREATE TABLE {table} ("Start At" timestamptz NOT NULL, "Temp (C)" float8, device int4)')
        conn.execute(f"SELECT create_hypertable('{table}', by_range('Start At', INTERVAL '7 days'))")
        conn.execute(f"""INSERT INTO {table} SELECT '2020-01-01'::timestamptz + i * interval '41 minutes', i % 50, i % 3
                         FROM generate_series(0, 1999) i""")
        conn.execute(f"CREATE TABLE public.old_copy AS SELECT * FROM {table}")
    # 2020 is older than the two-year window on any date from 2022 on: the old CLI's own clock archives it
    env = cli_env(box.dsn, lake_dir, ARCHIVER_LEDGER_SCHEMA=box.ledger, ARCHIVER_INCLUDE=table)
    old = subprocess.run([*cli_before_lake_names, "run", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert old.returncode == 0, old.stderr[-2000:]
    delta = _delta(lake_dir)
    assert [f.name for f in delta.schema().fields][:2] == ["Start At", "Temp (C)"]  # its names, as it wrote them
    assert all("pg_name" not in (f.metadata or {}) for f in delta.schema().fields)

    with box.connect() as conn:  # then, with this revision: a new column and a new old chunk
        conn.execute(f'ALTER TABLE {table} ADD COLUMN "New Col" int4')
        conn.execute(f"""INSERT INTO {table} SELECT '2020-06-01'::timestamptz + i * interval '1 hour', 7, 1, i
                         FROM generate_series(0, 99) i""")
        conn.execute('ALTER TABLE public.old_copy ADD COLUMN "New Col" int4')
        conn.execute(f"INSERT INTO public.old_copy SELECT * FROM {table}")  # the old rows are dropped: the new ones
    with caplog.at_level("WARNING", logger="tsarchive"), engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:
        assert not engine.run().failed
    delta = _delta(lake_dir)
    names = [f.name for f in delta.schema().fields]
    assert names[:3] == ["Start At", "Temp (C)", "device"]  # an existing lake name never changes
    assert "new_col" in names and "New Col" not in names
    assert {f.name: (f.metadata or {}).get("pg_name") for f in delta.schema().fields}["new_col"] == "New Col"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "'Start At' holds ' '" in warning and f"ARCHIVER_LAKE_TABLE_NAMES='{table}={table}_v2'" in warning

    with engine_for(box.dsn, lake_dir, now=NOW, **overrides) as engine:  # old and new jobs in one range restore
        result = restore_range(engine, table, datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 7, 1, tzinfo=UTC),
                               into=f"{box.schema}.back")
    assert result.rows == 2100
    with box.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # all archived and dropped
        for left, right in ((f"{box.schema}.back", "public.old_copy"), ("public.old_copy", f"{box.schema}.back")):
            assert conn.execute(f"SELECT count(*) FROM (SELECT * FROM {left} EXCEPT ALL SELECT * FROM {right}) d"
                                ).fetchone()[0] == 0
    lake = Lake(settings_for(box.dsn, lake_dir).lake_url)
    columns, rows = run_query(lake, 'SELECT count(*), sum("Temp (C)")::BIGINT, count("New Col") FROM old_names')
    assert rows[0] == (2100, sum(i % 50 for i in range(2000)) + 700, 100)
    live = run_live_query(settings_for(box.dsn, lake_dir, **overrides), lake,
                          f'SELECT count(*), sum("New Col") FROM {table}')
    assert live.rows[0] == (2100, sum(range(100)))


def test_a_schema_delta_refuses_is_one_terminal_message_with_the_way_out(tmp_path):
    """Reached only when the lake table was changed outside tsarchive: delta-rs's own refusal, said once, not retried."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from shared_code.errors import SchemaEvolutionError, is_terminal
    from shared_code.storage.delta_table import ArchiveTable
    from shared_code.storage.partitioning import PartitionSpec

    lake = Lake((tmp_path / "lake").as_uri())
    spec = PartitionSpec("ts", (), integer=False)
    table = ArchiveTable(lake, "public.t", spec, source="public.t")
    write_deltalake(lake.delta_uri("public.t"), pa.table({"ts": pa.array([1], pa.int64()), "value": [1]}))
    with pytest.raises(SchemaEvolutionError) as refused:
        table.evolve(pa.schema([pa.field("ts", pa.int64()), pa.field("VALUE", pa.int64())]))
    message = str(refused.value)
    assert is_terminal(refused.value)
    assert "public.t" in message and "'VALUE'" in message and "ARCHIVER_LAKE_TABLE_NAMES='public.t=public.t_v2'" in message
