"""Restore: an archived, dropped chunk comes back into a new table, equal row for row (content hash) to the source."""

import json
import subprocess

import psycopg
import pytest

from shared_code.errors import ArchiverError, JobStateError, VerificationError
from shared_code.ledger import JobState
from shared_code.restore import restore

from .conftest import TSARCHIVE, cli_env, engine_for
from .helpers import ledger_jobs
from .test_types_pg import COLUMNS, ROWS


def _row_texts(conn, relation: str) -> list[str]:
    conn.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = 'iso_8601'")
    # alias `r`: the type table has a column named `t`, which `t::text` would mean instead of the row
    return sorted(r[0] for r in conn.execute(f"SELECT r::text FROM {relation} r").fetchall())


@pytest.fixture
def dropped_typed_chunk(pg_dsn, tmp_path):
    """Every type of the type table, archived and dropped."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood_t AS ENUM ('happy', 'sad')")
        conn.execute("CREATE DOMAIN positive_int AS int4 CHECK (VALUE > 0)")
        conn.execute(f"CREATE TABLE typed ({COLUMNS}) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE typed_2020 PARTITION OF typed FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        for row in ROWS:
            conn.execute(f"INSERT INTO typed VALUES {row}")
        original = _row_texts(conn, "typed_2020")
    lake = tmp_path / "lake"
    with engine_for(pg_dsn, lake, partitioned_tables=["public.typed"]) as engine:
        assert not engine.run().failed
    job = ledger_jobs(pg_dsn)[0]
    assert job.state == JobState.DROPPED
    return {"dsn": pg_dsn, "lake": lake, "job": job, "original": original}


def test_restore_every_type_exactly(dropped_typed_chunk):
    case = dropped_typed_chunk
    with engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine:
        result = restore(engine, case["job"].id)
    assert result.verified and result.rows == len(ROWS)
    assert result.target == "archiver_restore.typed__typed_2020"
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        assert _row_texts(conn, result.target) == case["original"]
        types = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                  "WHERE attrelid = 'archiver_restore.typed__typed_2020'::regclass AND attnum > 0").fetchall())
    assert types["n2"] == "numeric(10,2)" and types["iv"] == "interval" and types["mood"] == "mood_t"
    assert types["ip"] == "inet" and types["ia"] == "integer[]" and types["u"] == "uuid"


def test_restore_refuses_to_overwrite_and_bad_jobs(dropped_typed_chunk):
    case = dropped_typed_chunk
    with engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine:
        restore(engine, case["job"].id)
        with pytest.raises(ArchiverError, match="already exists; pass --replace"):
            restore(engine, case["job"].id)
        assert restore(engine, case["job"].id, replace=True).verified
        assert restore(engine, case["job"].id, target="audit.chunk_copy").target == "audit.chunk_copy"
        with pytest.raises(JobStateError, match="does not exist"):
            restore(engine, 999)
        with pytest.raises(ArchiverError, match="schema.table"):
            restore(engine, case["job"].id, target="nodot")


@pytest.mark.scenario('A corrupted archive file: restore refuses it')
def test_restore_refuses_a_corrupt_archive(dropped_typed_chunk):
    case = dropped_typed_chunk
    path = case["lake"] / case["job"].lake_paths[0]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine, \
            pytest.raises(VerificationError, match="fails its check"):
        restore(engine, case["job"].id)


def test_restore_cli(dropped_typed_chunk):
    case = dropped_typed_chunk
    env = cli_env(case["dsn"], case["lake"], ARCHIVER_PARTITIONED_TABLES="public.typed")
    result = subprocess.run([TSARCHIVE, "restore", str(case["job"].id), "--json"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True
    again = subprocess.run([TSARCHIVE, "restore", str(case["job"].id)], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


# Not run against the TimescaleDB test server: its wire-protocol shim has no COPY FROM STDIN, which ADBC ingest uses
# (it drops the connection). The restored table is a plain table, so PostgreSQL 15 exercises the same path.


def test_replace_only_overwrites_tables_restore_created(dropped_typed_chunk):
    case = dropped_typed_chunk
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        conn.execute("CREATE TABLE public.precious (x int)")
    with engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine, \
            pytest.raises(ArchiverError, match="not created by `tsarchive restore`"):
        restore(engine, case["job"].id, target="public.precious", replace=True)
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.precious')").fetchone()[0] is not None


INJECTION = "int); drop table odd.original; create table odd.pwned(x int"


def _tamper(case) -> None:
    """Edit the archived manifest in the lake as an attacker with write access to the storage would."""
    path = case["lake"] / case["job"].manifest_path
    manifest = json.loads(path.read_text())
    manifest["columns"][1]["pg_type"] = INJECTION
    path.write_text(json.dumps(manifest))
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        conn.execute("CREATE SCHEMA odd")
        conn.execute("CREATE TABLE odd.original (x int)")


def _untouched(dsn) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('odd.original')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('odd.pwned')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'archiver_restore'").fetchone()[0] == 0


@pytest.mark.scenario('A manifest edited in the lake to inject SQL: restore refuses, nothing is executed')
def test_a_tampered_manifest_is_refused_and_runs_nothing(dropped_typed_chunk):
    case = dropped_typed_chunk
    assert case["job"].manifest_sha256 and case["job"].columns
    _tamper(case)
    with (engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine,
          pytest.raises(VerificationError, match="someone changed it in the lake")):
        restore(engine, case["job"].id)
    _untouched(case["dsn"])


def test_without_ledger_columns_the_manifest_types_must_be_type_names(dropped_typed_chunk):
    """Jobs archived before the ledger kept columns and the manifest's checksum: each type is checked instead."""
    case = dropped_typed_chunk
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        conn.execute("UPDATE archiver.jobs SET columns = NULL, manifest_sha256 = NULL WHERE id = %s", (case["job"].id,))
    _tamper(case)
    with (engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine,
          pytest.raises(VerificationError, match="is not a PostgreSQL type name; refusing")):
        restore(engine, case["job"].id)
    _untouched(case["dsn"])


def test_without_ledger_columns_an_honest_manifest_still_restores(dropped_typed_chunk):
    case = dropped_typed_chunk
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        conn.execute("UPDATE archiver.jobs SET columns = NULL, manifest_sha256 = NULL WHERE id = %s", (case["job"].id,))
    with engine_for(case["dsn"], case["lake"], partitioned_tables=["public.typed"]) as engine:
        result = restore(engine, case["job"].id)
    with psycopg.connect(case["dsn"], autocommit=True) as conn:
        assert _row_texts(conn, result.target) == case["original"]
