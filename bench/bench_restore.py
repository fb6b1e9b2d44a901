"""Restore benchmark: `tsarchive restore --hypertable --from --to --into` (lake -> target, with the per-chunk row-hash
proof) of one day of an archived 7-day chunk, against raw `COPY ... FROM STDIN (FORMAT binary)` of the same rows into
an empty table, side by side in one run.

Usage: .venv/bin/python bench/bench_restore.py [--rows 5040000] [--targets pg,tsdb] [--runs 3] [--baseline REV]
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
from bench_archive import (  # noqa: E402 - one chunk, one timer
    BASELINE_LAUNCHER,
    CHILD,
    COLUMNS,
    ROWS_SQL,
    SERVERS,
    server_cpu_seconds,
)

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
    """Wall, CPU and peak RSS of one whole process, and the PostgreSQL server's CPU over the same time."""
    server = server_cpu_seconds(env["ARCHIVER_DATABASE_URL"])
    result = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr[-2000:]}")
    wall, cpu, rss = result.stderr.strip().splitlines()[-1].split()[1:]
    return {"wall_s": float(wall), "cpu_s": float(cpu), "rss_mib": int(rss) / 1024,
            "server_cpu_s": round(server_cpu_seconds(env["ARCHIVER_DATABASE_URL"]) - server, 2)}


DAYS = 7  # the chunk spans a week; the restore asks for its first day (1/7 of the rows)


def bench(target: str, rows: int, runs: int, baseline: list[str] | None = None) -> dict:
    """Archive a `rows`-row chunk, then restore its first day `runs` times (and with `baseline`, that revision's CLI
    interleaved), beside COPY BINARY of the same rows into an empty table."""
    base, label = SERVERS[target]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    dsn = f"{base}/{DB}"
    step = max(1, (DAYS * 86_400_000) // rows)  # all rows inside one week: one chunk / partition
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
    day = ["--from", "2020-01-01T00:00:00+00:00", "--to", "2020-01-02T00:00:00+00:00"]
    with psycopg.connect(dsn, autocommit=True) as conn:  # what the restore must put back, kept for the check
        conn.execute("CREATE TABLE bench_rows AS SELECT * FROM bench WHERE ts < '2020-01-02T00:00:00+00:00'")
        wanted = conn.execute("SELECT count(*) FROM bench_rows").fetchone()[0]
    subprocess.run([str(BIN / "tsarchive"), "run"], env=env, check=True, capture_output=True)
    restore, copy_in, before = [], [], []
    binary = work / "rows.bin"
    with psycopg.connect(dsn, autocommit=True) as conn, open(binary, "wb") as out, \
            conn.cursor().copy("COPY bench_rows TO STDOUT (FORMAT binary)") as copy:
        for block in copy:
            out.write(block)
    for run in range(runs):  # interleaved, so drift on a noisy machine hits every path alike
        restore.append(timed([str(BIN / "tsarchive"), "restore", "--hypertable", "public.bench", *day,
                              "--into", f"public.restored_{run}", "--json"], env))
        if baseline:
            before.append(timed([*baseline, "restore", "--hypertable", "public.bench", *day,
                                 "--into", f"public.before_{run}", "--json"], env))
        copy_in.append(timed([sys.executable, "-c", COPY_IN, dsn, f"copied_{run}", str(binary)], env))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in range(runs):
            for table in [f"restored_{r}", *([f"before_{r}"] if baseline else [])]:
                differ = conn.execute(f"SELECT count(*) FROM ((TABLE bench_rows EXCEPT ALL TABLE {table}) UNION ALL "
                                      f"(TABLE {table} EXCEPT ALL TABLE bench_rows)) d").fetchone()[0]
                assert differ == 0, f"{table} differs from the rows in {differ} rows"

    def median(samples: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(s[k] for s in samples) for k in samples[0]}

    out = {"target": label, "rows": wanted, "chunk_rows": rows, "runs": runs, "restore": median(restore),
           "copy_binary_in": median(copy_in), **({"baseline_restore": median(before)} if baseline else {})}
    out["restore_vs_copy"] = out["copy_binary_in"]["wall_s"] / out["restore"]["wall_s"]  # rows/s over rows/s
    out["restore_rows_per_s"] = wanted / out["restore"]["wall_s"]
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| target | rows restored (of chunk) | restore s | restore CPU s | restore peak RSS MiB | COPY BINARY in s "
             "| COPY CPU s | restore speed vs COPY | baseline restore s / CPU s / RSS MiB "
             "| server CPU s: restore / COPY |", "|" + "---|" * 10]
    for r in results:
        base = r.get("baseline_restore")
        lines.append(f"| {r['target']} | {r['rows']:,} ({r['chunk_rows']:,}) | {r['restore']['wall_s']:.2f} | "
                     f"{r['restore']['cpu_s']:.2f} | {r['restore']['rss_mib']:.0f} | {r['copy_binary_in']['wall_s']:.2f} | "
                     f"{r['copy_binary_in']['cpu_s']:.2f} | {r['restore_vs_copy']:.2f} | "
                     + (f"{base['wall_s']:.2f} / {base['cpu_s']:.2f} / {base['rss_mib']:.0f} |" if base else "- |")
                     + f" {r['restore']['server_cpu_s']:.2f} / {r['copy_binary_in']['server_cpu_s']:.2f} |")
    return "\n".join(lines)


def baseline_cli(revision: str) -> tuple[list[str], Path]:
    """Another revision's tsarchive CLI, checked out in a temporary worktree and run by this interpreter."""
    worktree = Path(tempfile.mkdtemp(prefix="tsarchive-baseline-")) / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(worktree), revision],
                   check=True, capture_output=True)
    return [sys.executable, "-c", BASELINE_LAUNCHER, str(worktree)], worktree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_040_000)
    parser.add_argument("--targets", default="pg,tsdb")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also restore with this git revision's CLI, interleaved")
    args = parser.parse_args()
    baseline, worktree = baseline_cli(args.baseline) if args.baseline else (None, None)
    try:
        results = [bench(t, args.rows, args.runs, baseline) for t in args.targets.split(",")]
    finally:
        if worktree:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M")
    (ROOT / "bench" / "results" / f"restore-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
