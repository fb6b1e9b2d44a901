"""`tsarchive query --live` against DuckDB over PostgreSQL alone: the same aggregate, whole processes, interleaved.

Usage: .venv/bin/python bench/bench_live.py [--rows 5000000] [--runs 3]
Needs `make tsdb-native services`. A native TimescaleDB 2.28.3 hypertable of `--rows` rows (the bench_archive.py
columns, 10-day chunks over 60 days) has its older half archived and dropped by `tsarchive run`; a second hypertable
holds all the rows in PostgreSQL. Then, alternating per run: `tsarchive query --live` over the first (half from the
lake, half from PostgreSQL, in one snapshot) and DuckDB's postgres scanner over the second (all from PostgreSQL).
Both answers must agree. Appends the figures to RESULTS.md and writes results/live-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import COLUMNS, NATIVE_PORT, RESULTS, ROOT, ROWS_SQL, TSARCHIVE, median, whole_process  # noqa: E402

SERVER = f"postgresql://postgres@127.0.0.1:{NATIVE_PORT}"
DB = "tsarchive_bench_live"
AGGREGATE = ("SELECT count(*) AS n, sum(device) AS devices, round(avg(a), 6) AS avg_a, epoch_us(min(ts)) AS first_us, "
             "epoch_us(max(ts)) AS last_us FROM {}")
DUCKDB_OVER_PG = """
import json, sys, duckdb, duckdb_extension_postgres_scanner as ext, pathlib
path = next(pathlib.Path(ext.__file__).parent.rglob("postgres_scanner.duckdb_extension"))
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'"); con.execute("SET enable_progress_bar = false")
con.execute(f"INSTALL '{path}'"); con.execute("LOAD postgres_scanner")
con.execute(f"ATTACH '{sys.argv[1]}' AS pg (TYPE postgres, READ_ONLY)")
print(json.dumps(con.execute(sys.argv[2]).fetchall(), default=str))
"""


def setup(rows: int) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    step = max(1, int(60 * 86400 * 1000 / rows))
    with psycopg.connect(f"{SERVER}/{DB}", autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table in ("metrics", "metrics_all"):
            conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
            conn.execute(f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '10 days'))")
        conn.execute(f"INSERT INTO metrics {ROWS_SQL.format(step=step, rows=rows)}")
        conn.execute("INSERT INTO metrics_all SELECT * FROM metrics")  # the same rows (the generator is random)
        for table in ("metrics", "metrics_all"):
            conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"== {args.rows:,} rows", file=sys.stderr, flush=True)
    setup(args.rows)
    lake = Path(tempfile.mkdtemp(prefix="tsarchive-live-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    # the rows span 2020-01-01 + 60 days: a cutoff of 2020-01-31 makes the older half due, whatever today is
    env.update(ARCHIVER_DATABASE_URL=f"{SERVER}/{DB}", ARCHIVER_LAKE_URL=lake.as_uri(), ARCHIVER_INCLUDE="public.metrics",
               ARCHIVER_RETENTION_DAYS=str((date.today() - date(2020, 1, 31)).days))
    archived = whole_process([TSARCHIVE, "run", "--json"], env)
    report = json.loads(archived.output)
    dropped = sum(1 for s in report["steps"] if s["step"] == "drop" and s["outcome"] == "done")
    with psycopg.connect(f"{SERVER}/{DB}") as conn:
        hot = conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
    print(f"== archived and dropped {dropped} chunk(s); {hot:,} rows still in PostgreSQL", file=sys.stderr, flush=True)
    live, alone, answers = [], [], set()
    for _ in range(args.runs):
        measure = whole_process([TSARCHIVE, "query", "--live", "--json", AGGREGATE.format("public.metrics")], env)
        live.append(measure)
        answers.add(json.dumps(list(json.loads(measure.output)[0].values()), default=str))
        measure = whole_process([sys.executable, "-c", DUCKDB_OVER_PG, f"host=127.0.0.1 port={NATIVE_PORT} user=postgres "
                                 f"dbname={DB}", AGGREGATE.format("pg.public.metrics_all")])
        alone.append(measure)
        answers.add(json.dumps(json.loads(measure.output)[0], default=str))
    shutil.rmtree(lake, ignore_errors=True)
    result = {
        "stamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": " ".join(["python", "bench/bench_live.py", *sys.argv[1:]]), "rows": args.rows,
        "hot_rows": hot, "dropped_chunks": dropped, "answers_agree": len(answers) == 1, "answers": sorted(answers),
        "live": {"wall_s": median([m.wall_s for m in live]), "cpu_s": median([m.cpu_s for m in live]),
                 "peak_rss_mib": round(max(m.peak_rss_mib for m in live), 1)},
        "duckdb_over_pg": {"wall_s": median([m.wall_s for m in alone]), "cpu_s": median([m.cpu_s for m in alone]),
                           "peak_rss_mib": round(max(m.peak_rss_mib for m in alone), 1)},
    }
    RESULTS.mkdir(exist_ok=True)
    stem = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    (RESULTS / f"live-{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = (f"\n### {result['stamp']} ({result['machine']}): query --live\n`{result['command']}`\n\n"
            f"{args.rows:,} rows, {args.rows - hot:,} of them archived and dropped ({dropped} chunks), {hot:,} hot. "
            f"Answers agree: {result['answers_agree']}.\n\n"
            "| path | wall s | CPU s | peak RSS MiB |\n|---|---|---|---|\n"
            f"| `tsarchive query --live` (half lake, half PostgreSQL, one snapshot) | {result['live']['wall_s']} | "
            f"{result['live']['cpu_s']} | {result['live']['peak_rss_mib']} |\n"
            f"| DuckDB postgres scanner over PostgreSQL alone (all rows hot) | {result['duckdb_over_pg']['wall_s']} | "
            f"{result['duckdb_over_pg']['cpu_s']} | {result['duckdb_over_pg']['peak_rss_mib']} |\n")
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(text)
    if len(answers) != 1:
        sys.exit(f"the answers differ: {sorted(answers)}")


if __name__ == "__main__":
    main()
