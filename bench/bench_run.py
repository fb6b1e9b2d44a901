"""Benchmark `tsarchive run` on one large chunk: rows/s and peak memory, against the bare COPY BINARY limit.

Usage: .venv/bin/python bench/bench_run.py [--rows 2000000] [--target pg|tsdb|both]
Needs `make services`. Appends the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
TSARCHIVE = str(ROOT / ".venv" / "bin" / "tsarchive")
PG_PORT = os.environ.get("TSARCHIVE_PG_PORT", "55432")
TSDB_PORT = os.environ.get("TSARCHIVE_TSDB_PORT", "55433")
PG_ADMIN = f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres"
PG_BENCH = f"postgresql://postgres@127.0.0.1:{PG_PORT}/tsarchive_bench"
TSDB = f"postgresql://postgres:postgres@127.0.0.1:{TSDB_PORT}/postgres?sslmode=disable"

# The schema FACTS.md measured: timestamptz, int4, 3 x float8, text, jsonb.
COLUMNS = "ts timestamptz NOT NULL, device int4, a float8, b float8, c float8, label text, attrs jsonb"
ROWS_SQL = """
SELECT '2020-01-01'::timestamptz + g * interval '{step} ms', g % 1000, random(), random() * 100, g * 0.5,
       'device-' || (g % 1000), jsonb_build_object('fw', 'v' || (g % 7), 'ok', g % 3 = 0)
FROM generate_series(1, {rows}) g
"""


def seed_pg(rows: int) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS tsarchive_bench WITH (FORCE)")
        admin.execute("CREATE DATABASE tsarchive_bench")
    with psycopg.connect(PG_BENCH, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE metrics ({COLUMNS}) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE metrics_2020_01 PARTITION OF metrics FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        step = max(1, int(30 * 86400 * 1000 / rows))
        conn.execute(f"INSERT INTO metrics {ROWS_SQL.format(step=step, rows=rows)}")
        conn.execute("VACUUM ANALYZE metrics_2020_01")
    return PG_BENCH


def seed_tsdb(rows: int) -> str:
    with psycopg.connect(TSDB, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS bench_ledger CASCADE")
        conn.execute("CREATE SCHEMA bench")
        conn.execute(f"CREATE TABLE bench.metrics ({COLUMNS})")
        conn.execute("SELECT create_hypertable('bench.metrics', by_range('ts', INTERVAL '60 days'))")
        step = max(1, int(30 * 86400 * 1000 / rows))
        conn.execute(f"INSERT INTO bench.metrics {ROWS_SQL.format(step=step, rows=rows)}")
    return TSDB


def copy_limit(dsn: str, relation: str) -> float:
    """Seconds to pull the chunk as COPY BINARY through psycopg, discarding the bytes: one connection's ceiling."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
            cur.copy(f"COPY (SELECT * FROM {relation}) TO STDOUT (FORMAT binary)") as copy:
        for _ in copy:
            pass
    return time.perf_counter() - started


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int, dict]:
    """Wall seconds, peak RSS (MiB) of the child, parsed JSON output."""
    # A wrapper process per run, so the peak RSS is this run's alone.
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", wrapper, TSARCHIVE, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"tsarchive {' '.join(args)} failed:\n{result.stderr}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return elapsed, peak_kib // 1024, json.loads(result.stdout)


def bench(target: str, rows: int) -> dict:
    dsn = seed_pg(rows) if target == "pg" else seed_tsdb(rows)
    relation = "metrics_2020_01" if target == "pg" else None
    lake = Path(tempfile.mkdtemp(prefix="tsarchive-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env.update(ARCHIVER_DATABASE_URL=dsn, ARCHIVER_LAKE_URL=lake.as_uri())
    if target == "pg":
        env["ARCHIVER_PARTITIONED_TABLES"] = "public.metrics"
    else:
        env.update(ARCHIVER_INCLUDE="bench.*", ARCHIVER_LEDGER_SCHEMA="bench_ledger")
        with psycopg.connect(dsn, autocommit=True) as conn:
            chunk = conn.execute("SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                                 "WHERE hypertable_schema = 'bench' ORDER BY range_start LIMIT 1").fetchone()[0]
        relation = chunk
    limit = copy_limit(dsn, relation)
    archive_s, archive_mb, archive = timed(["run", "--no-drop", "--json"], env)
    drop_s, drop_mb, _ = timed(["run", "--json"], env)
    archived_rows = archive["rows"]
    parquet_bytes = archive["bytes"]
    shutil.rmtree(lake, ignore_errors=True)
    return {
        "target": "PostgreSQL 15 partition" if target == "pg" else "TimescaleDB (WASM) chunk",
        "rows": archived_rows,
        "copy_binary_s": round(limit, 2),
        "archive_verify_s": round(archive_s, 2),
        "archive_rows_per_s": int(archived_rows / archive_s),
        "drop_recheck_s": round(drop_s, 2),
        "end_to_end_rows_per_s": int(archived_rows / (archive_s + drop_s)),
        "peak_rss_mib": max(archive_mb, drop_mb),
        "parquet_mib": round(parquet_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--target", choices=["pg", "tsdb", "both"], default="both")
    args = parser.parse_args()
    targets = ["pg", "tsdb"] if args.target == "both" else [args.target]
    results = [bench(t, args.rows if t == "pg" else min(args.rows, 1_000_000)) for t in targets]
    header = ("| target | rows | COPY BINARY limit (s) | archive+verify (s) | rows/s | drop re-check (s) | "
              "end-to-end rows/s | peak RSS (MiB) | Parquet (MiB) |")
    lines = [f"\n### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {platform.python_version()}",
             f"`{' '.join([Path(sys.executable).name, *sys.argv])}`", "", header, "|" + "---|" * 9]
    for r in results:
        lines.append(f"| {r['target']} | {r['rows']:,} | {r['copy_binary_s']} | {r['archive_verify_s']} | "
                     f"{r['archive_rows_per_s']:,} | {r['drop_recheck_s']} | {r['end_to_end_rows_per_s']:,} | "
                     f"{r['peak_rss_mib']} | {r['parquet_mib']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
