"""Restore benchmark: `tsarchive restore --hypertable` (lake -> staging -> target, with the per-chunk row-hash proof)
against raw `COPY ... FROM STDIN (FORMAT binary)` of the same rows, side by side in one run.

Usage: .venv/bin/python bench/bench_restore.py [--rows 1000000] [--targets pg,tsdb] [--runs 3]
Needs `make services` (the `tsdb` target also the native TimescaleDB). Each figure is a whole process (wall seconds,
user+sys CPU, peak RSS), median of --runs. Writes bench/results/restore-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_archive import CHILD, COLUMNS, ROWS_SQL, SERVERS  # noqa: E402 - one definition of the chunk and timer

BIN = Path(sys.executable).parent
DB = "tsarchive_bench_restore"
COPY_IN = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn, open(sys.argv[3], "rb") as source:
    conn.execute(f"CREATE TABLE {sys.argv[2]} (LIKE bench_template)")
    with conn.cursor().copy(f"COPY {sys.argv[2]} FROM STDIN (FORMAT binary)") as copy:
        while block := source.read(1 << 20):
            copy.write(block)
"""


def timed(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr[-2000:]}")
    wall, cpu, rss = result.stderr.strip().splitlines()[-1].split()[1:]
    return {"wall_s": float(wall), "cpu_s": float(cpu), "rss_mib": int(rss) / 1024}


def bench(target: str, rows: int, runs: int) -> dict:
    base, label = SERVERS[target]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    dsn = f"{base}/{DB}"
    step = max(1, (30 * 86_400_000) // rows)  # all rows inside one month: one chunk / partition
    with psycopg.connect(dsn, autocommit=True) as conn:
        if target == "tsdb":
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute(f"CREATE TABLE bench ({COLUMNS})")
            conn.execute("SELECT create_hypertable('bench', by_range('ts', INTERVAL '40 days'))")
        else:
            conn.execute(f"CREATE TABLE bench ({COLUMNS}) PARTITION BY RANGE (ts)")
            conn.execute("CREATE TABLE bench_2020 PARTITION OF bench FOR VALUES FROM ('2019-12-01') TO ('2020-03-01')")
        conn.execute(f"INSERT INTO bench {ROWS_SQL.format(step=step, rows=rows)}")
        conn.execute(f"CREATE TABLE bench_template ({COLUMNS})")
        conn.execute("VACUUM ANALYZE bench")
    work = Path(tempfile.mkdtemp(prefix="tsarchive-restore-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env.update(ARCHIVER_DATABASE_URL=dsn, ARCHIVER_LAKE_URL=(work / "lake").as_uri())
    if target == "pg":
        env["ARCHIVER_PARTITIONED_TABLES"] = "public.bench"
    else:
        env["ARCHIVER_INCLUDE"] = "public.bench"
    subprocess.run([str(BIN / "tsarchive"), "run"], env=env, check=True, capture_output=True)
    restore, copy_in = [], []
    binary = work / "rows.bin"
    for run in range(runs):
        restore.append(timed([str(BIN / "tsarchive"), "restore", "--hypertable", "public.bench", "--from", "2019-01-01",
                              "--to", "2021-01-01", "--into", f"public.restored_{run}", "--json"], env))
        if run == 0:
            with psycopg.connect(dsn, autocommit=True) as conn, open(binary, "wb") as out, \
                    conn.cursor().copy("COPY restored_0 TO STDOUT (FORMAT binary)") as copy:
                for block in copy:
                    out.write(block)
        copy_in.append(timed([sys.executable, "-c", COPY_IN, dsn, f"copied_{run}", str(binary)], env))
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = {conn.execute(f"SELECT count(*) FROM restored_{r}").fetchone()[0] for r in range(runs)}
    assert counts == {rows}, counts

    def median(samples: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(s[k] for s in samples) for k in samples[0]}

    out = {"target": label, "rows": rows, "runs": runs, "restore": median(restore), "copy_binary_in": median(copy_in)}
    out["copy_over_restore"] = out["copy_binary_in"]["wall_s"] / out["restore"]["wall_s"]
    out["restore_rows_per_s"] = rows / out["restore"]["wall_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--targets", default="pg")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [bench(t, args.rows, args.runs) for t in args.targets.split(",")]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    (ROOT / "bench" / "results" / f"restore-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| target | rows | restore s | restore CPU s | restore RSS MiB | COPY BINARY in s | COPY / restore |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['target']} | {r['rows']:,} | {r['restore']['wall_s']:.2f} | {r['restore']['cpu_s']:.2f} | "
              f"{r['restore']['rss_mib']:.0f} | {r['copy_binary_in']['wall_s']:.2f} | {r['copy_over_restore']:.2f} |")


if __name__ == "__main__":
    main()
