"""Restore by time range, on PostgreSQL 15 partitions and on TimescaleDB (native and WASM): every type comes back
exactly (EXCEPT ALL both ways over each row's text), into a staging table or the original table, duplicates refused."""

import json
import re
import subprocess
from datetime import UTC, datetime

import psycopg
import pytest

from shared_code.errors import ArchiverError, VerificationError
from shared_code.ledger import JobState
from shared_code.restore import RestoreRefused, restore_range

from .conftest import TSARCHIVE, cli_env, engine_for
from .test_types_pg import COLUMNS, ROWS

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # pinned: the data is from 2020, so every chunk is due whatever today is
DAYS = ["2020-01-01", "2020-01-09", "2020-01-20", "2020-02-03", "2020-02-28", "2020-03-15"]
EXTRA = "ma int4[], mt text[], big text, jx jsonb"
EXTRA_VALUES = [
    ("{{1,NULL},{3,4}}", '{{"a","b"},{NULL,"\\"q\\""}}', "toast", '{"esc": "tab\\t quote\\" backslash\\\\ é"}'),
    ("[0:2]={1,2,3}", "{}", "", "{}"),
    ("{}", "{NULL}", None, None),
    (None, '[2:2]={"x"}', "toast", '{"a": [1, 2.50, null]}'),
]


class Source:
    def __init__(self, dsn: str, schema: str, settings: dict, kind: str) -> None:
        self.dsn, self.schema, self.settings, self.kind = dsn, schema, settings, kind
        self.table = f"{schema}.typed"

    def connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.execute("SET client_min_messages = warning; SET TimeZone = 'UTC'; SET extra_float_digits = 3; "
                     "SET IntervalStyle = 'iso_8601'")
        return conn

    def engine(self, lake):
        return engine_for(self.dsn, lake, now=NOW, **self.settings)


def _create(conn, schema: str, partitions: bool) -> None:
    conn.execute(f"CREATE TYPE {schema}.mood_t AS ENUM ('happy', 'sad')")
    conn.execute(f"CREATE DOMAIN {schema}.positive_int AS int4 CHECK (VALUE > 0)")
    columns = COLUMNS.replace("mood_t", f"{schema}.mood_t").replace("positive_int", f"{schema}.positive_int")
    conn.execute(f"CREATE TABLE {schema}.typed ({columns}, {EXTRA})" + (" PARTITION BY RANGE (ts)" if partitions else ""))
    if partitions:
        for month in (1, 2, 3):
            conn.execute(f"CREATE TABLE {schema}.typed_2020_{month:02d} PARTITION OF {schema}.typed "
                         f"FOR VALUES FROM ('2020-{month:02d}-01') TO ('2020-{month + 1:02d}-01')")
    else:
        conn.execute(f"SELECT create_hypertable('{schema}.typed', by_range('ts', INTERVAL '7 days'))")
    for day in DAYS:
        for row in ROWS:
            values = row.replace("2020-01-01 00:00", day + " 00:00", 1)
            conn.execute(f"INSERT INTO {schema}.typed ({_names(COLUMNS)}) VALUES {values}")
    for second, (ma, mt, big, jx) in enumerate(EXTRA_VALUES, start=1):
        conn.execute(f"UPDATE {schema}.typed SET ma = %s, mt = %s, big = CASE WHEN %s = 'toast' THEN "
                     "repeat(md5(ts::text), 6000) ELSE %s END, jx = %s "
                     "WHERE extract(second FROM ts) = %s", (ma, mt, big, big, jx, second))
    # a 60-digit numeric, and the largest and smallest finite values each time type takes
    conn.execute(f"UPDATE {schema}.typed SET n = 123456789012345678901234567890.123456789012345678901234567890 "
                 "WHERE extract(second FROM ts) = 1")


def _names(columns: str) -> str:
    return ", ".join(part.split()[0] for part in re.sub(r"\([^)]*\)", "", columns).split(","))


@pytest.fixture(params=["pg15", "wasm", "native"])
def source(request, tmp_path):
    if request.param == "pg15":
        dsn = request.getfixturevalue("pg_dsn")
        src = Source(dsn, "public", {"partitioned_tables": ["public.typed"]}, "pg15")
        with src.connect() as conn:
            _create(conn, "public", partitions=True)
    else:
        box = request.getfixturevalue("tsdb" if request.param == "wasm" else "native_tsdb")
        src = Source(box.dsn, box.schema, {"include": [f"{box.schema}.*"], "ledger_schema": box.ledger}, request.param)
        with src.connect() as conn:
            conn.execute("DROP SCHEMA IF EXISTS archiver_restore CASCADE")  # the WASM server is shared between tests
            _create(conn, box.schema, partitions=False)
    with src.connect() as conn:
        conn.execute(f"CREATE TABLE {src.schema}.original AS SELECT * FROM {src.table}")
        assert conn.execute(f"SELECT count(*) FROM {src.table}").fetchone()[0] == len(DAYS) * len(ROWS)
    lake = tmp_path / "lake"
    with src.engine(lake) as engine:
        report = engine.run()
        assert not report.failed, report.failed
        jobs = engine.ledger.all_jobs()
    assert jobs and all(j.state == JobState.DROPPED for j in jobs)
    with src.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {src.table}").fetchone()[0] == 0
    src.lake = lake
    return src


def _difference(conn, a: str, b: str, where: str = "") -> tuple[int, int]:
    """Rows of a not in b and of b not in a, compared as each row's full text (json has no equality operator)."""
    def one(x, y):
        return conn.execute(f"SELECT count(*) FROM (SELECT r::text FROM {x} r {where} EXCEPT ALL "
                            f"SELECT r::text FROM {y} r {where}) d").fetchone()[0]
    return one(a, b), one(b, a)


def test_round_trip_by_range_into_a_staging_table(source):
    with source.engine(source.lake) as engine:
        result = restore_range(engine, source.table, datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC))
    assert result.target.startswith("archiver_restore.typed__20200101") and result.created_target
    assert result.rows == len(DAYS) * len(ROWS) and all(c.status == "restored" for c in result.chunks)
    with source.connect() as conn:
        assert _difference(conn, result.target, f"{source.schema}.original") == (0, 0)
        types = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                                  "attrelid = %s::regclass AND attnum > 0", (result.target,)).fetchall())
        assert types["n2"] == "numeric(10,2)" and types["ma"] == "integer[]" and types["mood"].endswith("mood_t")
        assert conn.execute(f"SELECT ma::text FROM {result.target} WHERE extract(second FROM ts) = 2 LIMIT 1"
                            ).fetchone()[0] == "[0:2]={1,2,3}"


def test_partial_range_restores_only_its_rows(source):
    low, high = datetime(2020, 1, 9, tzinfo=UTC), datetime(2020, 2, 28, 0, 0, 2, tzinfo=UTC)
    with source.engine(source.lake) as engine:
        planned = restore_range(engine, source.table, low, high, into="audit.jan_feb", dry_run=True)
        result = restore_range(engine, source.table, low, high, into="audit.jan_feb")
    inside = len(ROWS) * 3 + 1  # 01-09, 01-20, 02-03 whole; of 02-28 only 00:00:01
    assert planned.rows == result.rows == inside and planned.dry_run
    where = "WHERE ts >= '2020-01-09' AND ts < '2020-02-28 00:00:02'"
    with source.connect() as conn:
        assert conn.execute("SELECT count(*) FROM audit.jan_feb").fetchone()[0] == inside
        assert _difference(conn, "audit.jan_feb", f"{source.schema}.original", where) == (0, 0)
        conn.execute("DROP SCHEMA audit CASCADE")


@pytest.mark.scenario('Restore into the original table, then again: the second is refused as duplicates')
def test_restore_into_the_original_table_then_duplicates_are_refused(source):
    if source.kind == "pg15":  # a dropped partition must exist again before its rows can go back
        with source.connect() as conn:
            conn.execute("CREATE TABLE public.typed_back PARTITION OF public.typed FOR VALUES FROM ('2020-01-01') "
                         "TO ('2020-04-01')")
    low, high = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC)
    with source.engine(source.lake) as engine:
        result = restore_range(engine, source.table, low, high, into=source.table)
        assert not result.created_target and result.rows == len(DAYS) * len(ROWS)
        with pytest.raises(RestoreRefused, match="already holds archived rows"):
            restore_range(engine, source.table, low, high, into=source.table)
        skipped = restore_range(engine, source.table, low, high, into=source.table, skip_present=True)
        assert {c.status for c in skipped.chunks} == {"present"} and skipped.rows == 0
    with source.connect() as conn:
        assert _difference(conn, source.table, f"{source.schema}.original") == (0, 0)


def test_refusals_say_what_is_wrong(source):
    with source.engine(source.lake) as engine:
        with pytest.raises(ArchiverError, match="no archived chunk of .* overlaps"):
            restore_range(engine, source.table, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
        with pytest.raises(ArchiverError, match="nothing of 'public.nope' is archived"):
            restore_range(engine, "public.nope", None, datetime(2024, 2, 1, tzinfo=UTC))
        with source.connect() as conn:
            conn.execute(f"CREATE TABLE {source.schema}.narrow (ts timestamptz, b int)")
        with pytest.raises(RestoreRefused, match="cannot take the archived rows: column"):
            restore_range(engine, source.table, None, datetime(2020, 2, 1, tzinfo=UTC), into=f"{source.schema}.narrow")


@pytest.mark.scenario('Rows altered on their way into the restore target (a trigger): the proof fails, the chunk is rolled back')
def test_the_proof_catches_rows_changed_on_the_way_in(source):
    """A trigger on the target alters one value per row: the read-back hash differs, and nothing is kept."""
    with source.connect() as conn:
        conn.execute(f"CREATE TABLE {source.schema}.tampered (LIKE {source.schema}.original)")
        conn.execute(f"CREATE FUNCTION {source.schema}.bump() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN NEW.i2 := coalesce(NEW.i2, 0) # 1; RETURN NEW; END $$")
        conn.execute(f"CREATE TRIGGER bump BEFORE INSERT ON {source.schema}.tampered FOR EACH ROW "
                     f"EXECUTE FUNCTION {source.schema}.bump()")
    with source.engine(source.lake) as engine, pytest.raises(VerificationError, match="differ from the archive"):
        restore_range(engine, source.table, None, datetime(2020, 1, 5, tzinfo=UTC), into=f"{source.schema}.tampered")
    with source.connect() as conn:
        assert conn.execute(f"SELECT count(*) FROM {source.schema}.tampered").fetchone()[0] == 0


@pytest.mark.parametrize("source", ["pg15"], indirect=True)  # the CLI is the same on every server
def test_cli_range_restore(source):
    env = cli_env(source.dsn, source.lake, ARCHIVER_PARTITIONED_TABLES="public.typed")
    base = [TSARCHIVE, "restore", "--hypertable", "public.typed", "--from", "2020-02-01", "--to", "2020-03-01"]
    dry = subprocess.run([*base, "--dry-run"], env=env, capture_output=True, text=True)
    assert dry.returncode == 0 and "would restore 8 rows from 1 chunk(s)" in dry.stdout, dry.stdout + dry.stderr
    done = subprocess.run([*base, "--into", "public.feb", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 8 and report["chunks"][0]["row_hash"].startswith("rows128:")
    again = subprocess.run([*base, "--into", "public.feb"], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "already holds archived rows" in again.stderr and "Traceback" not in again.stderr
    piped = subprocess.run([*base, "--into", "public.feb2"], env=env, capture_output=True, text=True)
    assert piped.returncode == 0 and "restore: typed_2020_02 (job" in piped.stderr  # a line per chunk off a terminal
    bad = subprocess.run([TSARCHIVE, "restore", "--hypertable", "public.typed", "--from", "soon"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "is not an ISO 8601 timestamp" in bad.stderr
    with source.connect() as conn:
        audit = conn.execute("SELECT state, rows, requested_by FROM archiver.restores ORDER BY id").fetchall()
    assert audit == [("done", 8, "cli"), ("failed", None, "cli"), ("done", 8, "cli")]


def test_types_archived_as_text_come_back_as_their_type(pg_dsn, tmp_path):
    """ARCHIVER_UNSUPPORTED_AS_TEXT=true: ranges, geometry, money, bit strings, xml, tsvector, composites and their
    arrays are archived as PostgreSQL text, and restore casts each back to its recorded type."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE pair AS (a int, b text)")
        conn.execute("CREATE TABLE odd (ts timestamptz NOT NULL, r int4range, tr tstzrange, p point, bx box, m money, "
                     "bits bit varying(8), x xml, v tsvector, c pair, ra int4range[], pa pair[]) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE odd_2020 PARTITION OF odd FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("""INSERT INTO odd VALUES
            ('2020-01-02', '[1,5)', '[2020-01-01 00:00+00,infinity)', '(1.5,-2)', '((0,0),(1,1))', '12.34', B'1011',
             '<a b="c">d &amp; e</a>', 'the quick:1 fox:2', ROW(1, 'x "y"'), ARRAY['[1,2)'::int4range, 'empty'],
             ARRAY[ROW(2, NULL)::pair]),
            ('2020-01-03', 'empty', NULL, NULL, NULL, '-0.01', B'', NULL, '', ROW(NULL, NULL), '{}', NULL)""")
        conn.execute("CREATE TABLE original AS SELECT * FROM odd")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=NOW, partitioned_tables=["public.odd"], unsupported_as_text=True) as engine:
        assert not engine.run().failed
        result = restore_range(engine, "public.odd", None, datetime(2020, 2, 1, tzinfo=UTC))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM odd").fetchone()[0] == 0
        assert _difference(conn, result.target, "original") == (0, 0)
        types = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                                  "attrelid = %s::regclass AND attnum > 0", (result.target,)).fetchall())
    assert types["r"] == "int4range" and types["bits"] == "bit varying(8)" and types["pa"] == "pair[]"


def test_straight_load_and_its_fallback_through_staging_are_both_exact(pg_dsn, tmp_path, caplog):
    """Every column a direct type: the rows go straight into the target (COPY from Arrow, jsonb behind its version
    byte, char(n) padding, numeric(p,s), naive timestamps). One chunk holding an infinity goes through staging
    instead; both come back value for value."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE plain (ts timestamptz NOT NULL, naive timestamp, d date, n numeric(10,2), j jsonb, "
                     "js json, ch char(4), vc varchar(5), b bytea, f real, i int2, big int8, ok bool, t text) "
                     "PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE plain_01 PARTITION OF plain FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("CREATE TABLE plain_02 PARTITION OF plain FOR VALUES FROM ('2020-02-01') TO ('2020-03-01')")
        conn.execute("""INSERT INTO plain SELECT '2020-01-01'::timestamptz + i * interval '7 minutes',
                        '2020-01-01'::timestamp + i * interval '1 minute', '2020-01-01'::date + i % 40, (i % 1000) / 4.0,
                        jsonb_build_object('k', i, 'v', 'x' || i), '{"raw":  1}', 'ab', 'v' || i % 100,
                        decode(md5(i::text), 'hex'), i / 3.0, i % 300, i::int8 * 1000000007, i % 2 = 0, repeat('é', i % 5)
                        FROM generate_series(0, 5999) i""")
        conn.execute("INSERT INTO plain (ts, d, j) VALUES ('2020-01-05', NULL, 'null'), ('2020-01-06', NULL, NULL)")
        conn.execute("INSERT INTO plain (ts, d) VALUES ('2020-02-10', 'infinity')")  # February needs staging
        conn.execute("CREATE TABLE original AS SELECT * FROM plain")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, now=NOW, partitioned_tables=["public.plain"]) as engine:
        assert not engine.run().failed
        with caplog.at_level("INFO", logger="tsarchive"):
            result = restore_range(engine, "public.plain", None, datetime(2020, 3, 1, tzinfo=UTC))
    assert [c.status for c in result.chunks] == ["restored", "restored"]
    staged = [r.getMessage() for r in caplog.records if "goes through staging" in r.getMessage()]
    assert len(staged) == 1 and "'d' holds an infinity" in staged[0]  # only February; January went straight in
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert _difference(conn, result.target, "original") == (0, 0)
        assert conn.execute(f"SELECT count(*) FROM {result.target} WHERE d = 'infinity'").fetchone()[0] == 1
        assert conn.execute(f"SELECT octet_length(ch::bytea) FROM {result.target} LIMIT 1").fetchone()[0] == 4


def test_a_failed_chunk_stops_the_next_chunks_feed_and_keeps_the_chunks_before(pg_dsn, tmp_path):
    """Three chunks loaded straight in, each one's lake feed started while the one before is proven. A trigger alters
    the second chunk's rows: its proof fails and it is rolled back, the first stays, the third is never loaded, and
    no reading thread is left behind."""
    import threading

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE feed (ts timestamptz NOT NULL, v float8, t text) PARTITION BY RANGE (ts)")
        for month in (1, 2, 3):
            conn.execute(f"CREATE TABLE feed_{month} PARTITION OF feed FOR VALUES FROM ('2020-{month:02d}-01') "
                         f"TO ('2020-{month + 1:02d}-01')")
        conn.execute("INSERT INTO feed SELECT '2020-01-01'::timestamptz + i * interval '13 minutes', i / 7.0, 'r' || i "
                     "FROM generate_series(0, 9000) i")
        conn.execute("CREATE TABLE feed_back (LIKE feed)")
        conn.execute("CREATE FUNCTION nudge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF NEW.ts >= '2020-02-01' THEN NEW.v := NEW.v + 1; END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER nudge BEFORE INSERT ON feed_back FOR EACH ROW EXECUTE FUNCTION nudge()")
        january = conn.execute("SELECT count(*) FROM feed WHERE ts < '2020-02-01'").fetchone()[0]
    before = {t.name for t in threading.enumerate()}
    with engine_for(pg_dsn, tmp_path / "lake", now=NOW, partitioned_tables=["public.feed"]) as engine:
        assert not engine.run().failed
        assert len(engine.ledger.all_jobs()) == 3
        with pytest.raises(VerificationError, match="feed_2 .* differ from the archive"):
            restore_range(engine, "public.feed", None, datetime(2020, 4, 1, tzinfo=UTC), into="public.feed_back")
    assert not [t for t in threading.enumerate() if t.name.startswith("tsarchive") and t.name not in before]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        kept = conn.execute("SELECT count(*), max(ts) < '2020-02-01' FROM feed_back").fetchone()
    assert kept == (january, True)
