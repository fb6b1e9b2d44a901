"""The README documents every setting and every type mapping row the code knows."""

import os
from pathlib import Path

import pytest

from shared_code.settings import ENV_PREFIX, Settings
from shared_code.typemap import MAPPING_DOC

from .test_types_pg import archived  # noqa: F401 - the fixture: a table holding every supported type, archived

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_in_the_readme_table():
    missing = [ENV_PREFIX + name.upper() for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README]
    assert not missing, f"add to the README settings table: {missing}"


def test_every_type_mapping_row_in_the_readme():
    missing = [pg for pg, _, _ in MAPPING_DOC if f"| {pg} |" not in README]
    assert not missing, f"add to the README type table: {missing}"


# -- docs/querying.md and the README's query examples, run against a real archive ----------------------------------
QUERYING = (Path(__file__).resolve().parent.parent / "docs" / "querying.md").read_text()
DOC_LAKE = "/srv/archive"
AZURE_LAKE = "abfss://archive@acct.dfs.core.windows.net/timescale"


def _blocks(text: str, language: str) -> list[str]:
    import re

    return [m.group(1) for m in re.finditer(rf"```{language}\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def doc_archive(tmp_path_factory) -> dict:
    """public.metrics archived to a local lake: Nov 2023 - Feb 2024 in 10-day partitions (crossing months and years)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    import psycopg

    from shared_code.engine import Engine

    from .conftest import PG_ADMIN, _require, settings_for

    _require(int(PG_ADMIN.rsplit(":", 1)[1].split("/")[0]), "PostgreSQL 15")
    name = f"t_docs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    lake = tmp_path_factory.mktemp("docs") / "archive"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.metrics (ts timestamptz NOT NULL, device int, value float8) "
                         "PARTITION BY RANGE (ts)")
            lo = datetime(2023, 11, 5, tzinfo=UTC)
            for index in range(12):
                hi = lo + timedelta(days=10)
                conn.execute(f"CREATE TABLE public.metrics_p{index} PARTITION OF public.metrics "
                             f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')")
                lo = hi
            conn.execute("INSERT INTO public.metrics SELECT t, (extract(hour FROM t))::int % 4, extract(day FROM t) "
                         "FROM generate_series('2023-11-05 00:00+00'::timestamptz, '2024-03-03 23:00+00', '1 hour') t")
            months = dict(conn.execute("SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM'), count(*) FROM public.metrics "
                                       "GROUP BY 1").fetchall())
        settings = settings_for(dsn, lake, partitioned_tables=["public.metrics"])
        with Engine(settings, clock=lambda: datetime(2026, 6, 1, tzinfo=UTC)) as engine:
            assert not engine.run().failed
        yield {"lake": lake, "months": months}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _duck():
    import duckdb

    from shared_code.query import _extension

    conn = duckdb.connect()
    conn.execute(f"LOAD '{_extension('duckdb_extension_delta')}'")
    return conn


def test_duckdb_examples_run(doc_archive):
    lake = str(doc_archive["lake"])
    local = [b for text in (QUERYING, README) for b in _blocks(text, "sql") if DOC_LAKE in b]
    assert len(local) >= 3
    for block in local:
        rows = _duck().execute(block.replace(DOC_LAKE, lake)).fetchall()
        assert rows, block
    per_month = _duck().execute(local[0].replace(DOC_LAKE, lake)).fetchall()
    assert {f"{y}-{m:02d}": n for y, m, n in per_month} == doc_archive["months"]
    december = _duck().execute(local[1].replace(DOC_LAKE, lake)).fetchall()
    assert december == [(2023, 12, doc_archive["months"]["2023-12"])]  # the folder holds exactly December


def test_python_examples_run(doc_archive, capsys):
    blocks = [b for b in _blocks(QUERYING, "python") if DOC_LAKE in b]
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block.replace(DOC_LAKE, str(doc_archive["lake"])), "querying.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith(f"{doc_archive['months']['2023-12']} ")
    assert "public.metrics_p" in printed


def test_tsarchive_query_examples_run(doc_archive):
    import shlex
    import subprocess

    from .conftest import TSARCHIVE

    lines = [line for text in (QUERYING, README) for block in _blocks(text, "bash") for line in block.splitlines()
             if line.startswith("tsarchive query") and "--live" not in line]  # --live: tests/test_live_query.py
    assert len(lines) >= 3
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env["ARCHIVER_LAKE_URL"] = doc_archive["lake"].as_uri()
    for line in lines:
        args = shlex.split(line.split("  #", 1)[0])
        result = subprocess.run([TSARCHIVE, *args[1:]], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.strip(), (line, result.stderr)


def test_azure_paths_in_the_docs_are_the_ones_written():
    from shared_code.storage.lake import Lake
    from shared_code.storage.layout import table_dir

    lake = Lake(AZURE_LAKE)
    folder = table_dir("", "public", "metrics")
    uri = lake.delta_uri(folder)
    assert uri == f"{AZURE_LAKE}/public.metrics"
    assert QUERYING.count(f"'{uri}'") >= 2  # DuckDB and Databricks
    https = f"https://acct.dfs.core.windows.net/archive/timescale/{folder}/"
    assert f"'{https}'" in QUERYING and f"'{https}year=*/month=*/*.parquet'" in QUERYING  # Synapse: Delta and Parquet
    assert "archive/timescale/public.metrics" in QUERYING  # Fabric shortcut folder


def test_the_architecture_page_names_only_modules_that_exist():
    """docs/architecture.md is where a newcomer starts: every module or package it names must be where it says."""
    import re

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+(?:\.py|/))", page))
    assert len(named) > 20
    missing = sorted(n for n in named if not any((base / n).exists() for base in (root, root / "shared_code")))
    assert not missing, f"docs/architecture.md names modules that are not there: {missing}"


# -- docs/querying.md, "Types, reader by reader": the DuckDB, Polars and Delta columns as those readers return them ---
TYPE_SAMPLES = {  # first cell of a row -> the column of tests/test_types_pg.py's table holding that type
    "`bool`": "b", "`int2`": "i2", "`int4`": "i4", "`int8`": "i8", "`float4`": "f4", "`float8`": "f8",
    "`numeric(p,s)`, p ≤ 38": "n2", "`numeric` (no precision, or over 38 digits)": "n",
    "`text`, `varchar`, `char(n)`, `name`": "t", "`bytea`": "by", "`uuid`": "u", "`json`, `jsonb`": "jb", "`date`": "d",
    "`time`, `timetz`": "tm", "`timestamp` (without time zone)": "tsn", "`timestamptz`": "ts", "`interval`": "iv",
    "arrays of `bool`, `int2/4/8`, `float4/8`, `text`": "ia", "arrays of other types": "da", "enum": "mood",
    "`inet`, `cidr`, `macaddr`, `macaddr8`": "ip", "a domain": "pos",
}


def _type_rows() -> list[list[str]]:
    section = QUERYING.split("## Types, reader by reader", 1)[1].split("\n\n`tsarchive restore` does", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| PostgreSQL")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _code(cell: str) -> str:
    """The first `code` of a cell, without a trailing `...`, with p,s as the sample column's (10,2)."""
    import re

    found = re.search(r"`([^`]+)`", cell)
    return found.group(1).replace("(p,s)", "(10,2)").replace("precision=p, scale=s", "precision=10, scale=2") \
        if found else ""


def test_the_reader_by_type_table_is_what_duckdb_and_polars_return(archived):  # noqa: F811 - the imported fixture
    import glob
    import re

    import polars as pl
    from deltalake import DeltaTable

    from shared_code.storage.delta_table import _type_name

    path, _ = archived
    (log,) = glob.glob(str(path).split("/year=")[0] + "/_delta_log")
    root = log.rsplit("/", 1)[0]
    rows = _type_rows()
    assert [r[0] for r in rows] == list(TYPE_SAMPLES)  # one row per sample, in this order
    delta = {f.name: f.type for f in DeltaTable(root).schema().fields}
    duck = {name: kind for name, kind, *_ in _duck().execute(f"DESCRIBE SELECT * FROM delta_scan('{root}')").fetchall()}
    polars = {name: str(kind) for name, kind in pl.read_delta(root).schema.items()}
    casts = 0
    for first, delta_cell, duck_cell, polars_cell, *_, back in rows:
        column = TYPE_SAMPLES[first]
        if first == "a domain":
            assert delta_cell == "as its base type" and _type_name(delta[column]) == "integer"
            continue
        stored = delta[column]
        name = _type_name(stored) if "Array" not in type(stored).__name__ else \
            f"array<{_type_name(stored.element_type)}>"
        assert _code(delta_cell) == name, first
        assert _code(duck_cell) == duck[column], first
        assert _code(polars_cell) == polars[column], first
        for expression in re.findall(r"DuckDB `([^`]+)`", back):  # each cast back runs on the ordinary row
            value = _duck().execute(f"SELECT {expression.replace('x', column)} FROM delta_scan('{root}') "
                                    "WHERE ts = TIMESTAMPTZ '2020-01-01 00:00:01+00'").fetchone()[0]
            assert value is not None, expression
            casts += 1
    assert casts == 6  # numeric, uuid, json, time, interval, date[]
