"""Side-by-side benchmark: raw COPY BINARY, DuckDB's postgres scanner -> Parquet, and `tsarchive run` (local lake and
Azurite) on the same chunk, plus the 10,000-chunk catalog case and the reader-stall probe.

Usage: .venv/bin/python bench/bench_archive.py [--rows 1000000,5000000] [--targets pg,tsdb] [--runs 3] [--smoke]
Needs `make services` (and for the `tsdb` target the native TimescaleDB, `make tsdb-native`).
Writes bench/results/<stamp>.json, bench/results/<stamp>.png (and latest.*), and appends a table to RESULTS.md.
Every figure is a whole process (wall seconds, user+sys CPU, peak RSS from getrusage), median of --runs runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TSARCHIVE = str(BIN / "tsarchive")
# `--baseline REV`: the CLI of another revision, checked out in a worktree, run by this interpreter. The editable
# install's import hook is removed first, or `shared_code` would resolve to this checkout.
BASELINE_LAUNCHER = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]; "
                     "sys.path.insert(0, sys.argv.pop(1)); from shared_code.cli import main; main()")
BASELINE: list[str] = []  # the command that runs the baseline's CLI, set by --baseline
RESULTS = ROOT / "bench" / "results"
PG_PORT = os.environ.get("TSARCHIVE_PG_PORT", "55432")
NATIVE_PORT = os.environ.get("TSARCHIVE_NATIVE_PORT", "55434")
AZURITE_BLOB_PORT = os.environ.get("TSARCHIVE_AZURITE_BLOB_PORT", "10000")
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    f"BlobEndpoint=http://127.0.0.1:{AZURITE_BLOB_PORT}/devstoreaccount1;"
)
SERVERS = {
    "pg": (f"postgresql://postgres@127.0.0.1:{PG_PORT}", "PostgreSQL 15 partition"),
    "tsdb": (f"postgresql://postgres@127.0.0.1:{NATIVE_PORT}", "TimescaleDB 2.28.3 chunk (native, PostgreSQL 15)"),
    # the same chunk in the columnstore (TimescaleDB compression, segmentby device): how old chunks usually sit
    "tsdbc": (f"postgresql://postgres@127.0.0.1:{NATIVE_PORT}", "TimescaleDB 2.28.3 compressed chunk (segmentby device)"),
}
DB = "tsarchive_bench"

# The chunk the issue measured: timestamptz, int4, 3 x float8, text, jsonb.
COLUMNS = "ts timestamptz NOT NULL, device int4, a float8, b float8, c float8, label text, attrs jsonb"
ROWS_SQL = """
SELECT '2020-01-01'::timestamptz + g * interval '{step} ms', g % 1000, random(), random() * 100, g * 0.5,
       'device-' || (g % 1000), jsonb_build_object('fw', 'v' || (g % 7), 'ok', g % 3 = 0)
FROM generate_series(1, {rows}) g
"""
CHILD = """
import resource, subprocess, sys, time
started = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - started
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.buffer.write(r.stderr)
sys.stdout.buffer.write(r.stdout)
print(f"\\n@@ {wall} {u.ru_utime + u.ru_stime} {u.ru_maxrss}", file=sys.stderr)
sys.exit(r.returncode)
"""
DUCKDB_SCRIPT = """
import sys, duckdb, duckdb_extension_postgres_scanner as ext, pathlib
path = next(pathlib.Path(ext.__file__).parent.rglob("postgres_scanner.duckdb_extension"))
con = duckdb.connect()
con.execute(f"INSTALL '{path}'"); con.execute("LOAD postgres_scanner")
con.execute(f"ATTACH '{sys.argv[1]}' AS pg (TYPE postgres, READ_ONLY)")
con.execute(f"COPY (SELECT * FROM pg.{sys.argv[2]}) TO '{sys.argv[3]}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)")
"""
COPY_SCRIPT = """
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn, conn.cursor() as cur, \\
        cur.copy(f"COPY (SELECT * FROM {sys.argv[2]}) TO STDOUT (FORMAT binary)") as copy:
    n = sum(len(block) for block in copy)
print(n)
"""


@dataclass
class Measure:
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    output: str
    server_cpu_s: float = 0.0  # the PostgreSQL server's CPU over the same run (server_cpu_seconds), where measured


def server_cpu_seconds(dsn: str) -> float:
    """CPU seconds the local PostgreSQL server has used so far: its postmaster's reaped children (every backend that
    has exited, so every finished connection) plus the children still running (checkpointer, WAL writer...). Linux
    /proc, server on this machine. On a 2-core machine a path's wall time cannot be below (its CPU + this) / 2."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    postmaster = int(Path(data, "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")

    def fields(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    total = sum(int(x) for x in fields(postmaster)[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = fields(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == postmaster:  # ppid
                total += int(stat[11]) + int(stat[12])
    return total / tick


def with_server_cpu(dsn: str, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one path, recording the server's CPU over it on the Measure it returns (or the first item it returns)."""
    before = server_cpu_seconds(dsn)
    out = run(*args, **kwargs)
    measure = out[0] if isinstance(out, tuple) else out
    measure.server_cpu_s = round(server_cpu_seconds(dsn) - before, 2)
    return out


def whole_process(args: list[str], env: dict[str, str] | None = None) -> Measure:
    """Run a command in a wrapper process that reports its wall time, CPU and peak RSS (getrusage of the child)."""
    result = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    wall, cpu, rss = result.stderr.strip().splitlines()[-1].split()[1:]
    return Measure(float(wall), float(cpu), int(rss) / 1024, result.stdout)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# -- fixtures ------------------------------------------------------------------------------------
class Fixture:
    """A database holding one chunk of `rows` rows, re-created from an unlogged copy before every run."""

    def __init__(self, target: str, rows: int) -> None:
        self.target, self.rows = target, rows
        self.server, self.label = SERVERS[target]
        self.dsn = f"{self.server}/{DB}"
        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DB}")
        step = max(1, int(30 * 86400 * 1000 / rows))
        with self.connect() as conn:
            conn.execute(f"CREATE UNLOGGED TABLE source ({COLUMNS})")
            conn.execute(f"INSERT INTO source {ROWS_SQL.format(step=step, rows=rows)}")
            if target == "pg":
                conn.execute(f"CREATE TABLE metrics ({COLUMNS}) PARTITION BY RANGE (ts)")
            else:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                conn.execute(f"CREATE TABLE metrics ({COLUMNS})")
                conn.execute("SELECT create_hypertable('metrics', by_range('ts', INTERVAL '60 days'))")
            conn.execute("CREATE INDEX ON metrics (ts)")
            if target == "tsdbc":
                conn.execute("ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device', "
                             "timescaledb.compress_orderby = 'ts')")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def reset(self) -> str:
        """A fresh chunk holding the rows, vacuumed and frozen as an old chunk is; an empty ledger. The chunk's name."""
        with self.connect() as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("DROP SCHEMA IF EXISTS archiver CASCADE")
            if self.target == "pg":
                conn.execute("DROP TABLE IF EXISTS metrics_2020_01")
                conn.execute("CREATE TABLE metrics_2020_01 PARTITION OF metrics "
                             "FOR VALUES FROM ('2020-01-01') TO ('2020-03-01')")
            else:
                conn.execute("TRUNCATE metrics")
            conn.execute("INSERT INTO metrics SELECT * FROM source")
            chunk = self.chunk(conn)
            conn.execute(f"VACUUM (FREEZE, ANALYZE) {chunk}")
            if self.target == "tsdbc":
                conn.execute(f"SELECT compress_chunk('{chunk}')")
                conn.execute("VACUUM (FREEZE, ANALYZE)")
        return chunk

    def scanned(self, chunk: str) -> str:
        """What DuckDB's scanner reads: the chunk, or for a compressed one the hypertable (the scanner reads a chunk's
        heap by ctid ranges, and a compressed chunk's heap is empty; the hypertable holds just this chunk)."""
        return "public.metrics" if self.target == "tsdbc" else chunk

    def chunk(self, conn: psycopg.Connection) -> str:
        if self.target == "pg":
            return "public.metrics_2020_01"
        row = conn.execute("SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
                           "WHERE hypertable_name = 'metrics' ORDER BY range_start LIMIT 1").fetchone()
        assert row is not None
        return str(row[0])

    def env(self, lake_url: str, *, azurite: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
        env.update(ARCHIVER_DATABASE_URL=self.dsn, ARCHIVER_LAKE_URL=lake_url)
        if azurite:
            env["ARCHIVER_LAKE_CONNECTION_STRING"] = AZURITE_CONNECTION_STRING
        if self.target == "pg":
            env["ARCHIVER_PARTITIONED_TABLES"] = "public.metrics"
        else:
            env["ARCHIVER_INCLUDE"] = "public.metrics"
        return env


def azurite_container() -> str:
    from azure.storage.blob import BlobServiceClient

    name = f"bench{int(time.time() * 1000) % 10**9}"
    BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).create_container(name)
    return name


def drop_container(name: str) -> None:
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).delete_container(name)


def lake_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet") if "_tsarchive" not in p.parts)


# -- the paths -------------------------------------------------------------------------------------
def run_copy(fx: Fixture, chunk: str) -> Measure:
    return whole_process([sys.executable, "-c", COPY_SCRIPT, fx.dsn, chunk])


def run_duckdb(fx: Fixture, chunk: str, out: Path) -> tuple[Measure, int]:
    libpq = f"host=127.0.0.1 port={fx.server.rsplit(':', 1)[1]} user=postgres dbname={DB}"
    measure = whole_process([sys.executable, "-c", DUCKDB_SCRIPT, libpq, fx.scanned(chunk), str(out)])
    size = out.stat().st_size
    out.unlink()
    return measure, size


def run_tsarchive(fx: Fixture, *, azurite: bool, compact: bool = False,
                  baseline: bool = False) -> tuple[Measure, dict[str, Any]]:
    """`tsarchive run --json` (this checkout's, or the baseline's): archive, verify and drop the chunk. Returns the
    measure and the report."""
    container = azurite_container() if azurite else None
    local = None if azurite else Path(tempfile.mkdtemp(prefix="tsarchive-bench-"))
    url = (f"abfss://{container}@devstoreaccount1.dfs.core.windows.net/lake" if container
           else local.as_uri())  # type: ignore[union-attr]
    try:
        env = fx.env(url, azurite=azurite)
        if compact:
            env["ARCHIVER_PARQUET_ENCODINGS"] = "compact"
        measure = whole_process([*(BASELINE if baseline else [TSARCHIVE]), "run", "--json"], env)
        report = json.loads(measure.output)
        if report["failed"] or not any(s["step"] == "drop" and s["outcome"] == "done" for s in report["steps"]):
            sys.exit(f"tsarchive run did not archive and drop the chunk: {report['steps']}")
        report["parquet_bytes"] = lake_bytes(local) if local else report["bytes"]
        return measure, report
    finally:
        if container:
            drop_container(container)
        if local:
            shutil.rmtree(local, ignore_errors=True)


def step_seconds(report: dict[str, Any], step: str) -> float:
    return sum(s["seconds"] for s in report["steps"] if s["step"] == step and s["outcome"] == "done")


def bench_chunk(target: str, rows: int, runs: int, paths: list[str]) -> dict[str, Any]:
    fx = Fixture(target, rows)
    samples: dict[str, list[Measure]] = {p: [] for p in paths}
    steps: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
    extra: dict[str, list[float]] = {"duckdb_bytes": [], "parquet_bytes": [], "compact_bytes": [], "archive_s": [],
                                     "drop_s": []}
    for _ in range(runs):  # interleaved, so drift on a noisy machine hits every path alike
        chunk, fresh = fx.reset(), True
        if "copy" in paths:
            samples["copy"].append(with_server_cpu(fx.dsn, run_copy, fx, chunk))
        if "duckdb" in paths:
            out = Path(tempfile.mkdtemp(prefix="tsarchive-duck-")) / "chunk.parquet"
            measure, size = with_server_cpu(fx.dsn, run_duckdb, fx, chunk, out)
            samples["duckdb"].append(measure)
            extra["duckdb_bytes"].append(size)
        for path, azurite, compact in (("tsarchive_local", False, False), ("tsarchive_baseline", False, False),
                                       ("tsarchive_azurite", True, False), ("tsarchive_compact", False, True)):
            if path in paths:
                if not fresh:
                    chunk = fx.reset()
                fresh = False
                measure, report = with_server_cpu(fx.dsn, run_tsarchive, fx, azurite=azurite, compact=compact,
                                                  baseline=path == "tsarchive_baseline")
                samples[path].append(measure)
                steps[path].append({"archive_s": round(step_seconds(report, "archive"), 3),
                                    "drop_s": round(step_seconds(report, "drop"), 3)})
                if compact:
                    extra["compact_bytes"].append(report["parquet_bytes"])
                elif not azurite and path == "tsarchive_local":
                    extra["parquet_bytes"].append(report["parquet_bytes"])
                    extra["archive_s"].append(step_seconds(report, "archive"))
                    extra["drop_s"].append(step_seconds(report, "drop"))
    result: dict[str, Any] = {"target": target, "label": fx.label, "rows": rows, "runs": runs, "paths": {}}
    for path, measures in samples.items():
        wall = median([m.wall_s for m in measures])
        result["paths"][path] = {
            "wall_s": wall, "rows_per_s": int(rows / wall), "cpu_s": median([m.cpu_s for m in measures]),
            "server_cpu_s": median([m.server_cpu_s for m in measures]),
            "peak_rss_mib": round(max(m.peak_rss_mib for m in measures), 1), "walls": [round(m.wall_s, 3) for m in measures],
        }
        if steps[path]:
            result["paths"][path]["steps"] = steps[path]
    for key, values in extra.items():
        if values:
            result[key] = median(values)
    return result


# -- many chunks ---------------------------------------------------------------------------------
def bench_many_chunks(total: int, due: int, runs: int) -> dict[str, Any]:
    """A hypertable with `total` one-hour chunks, `due` of them past retention: fixed cost per archived chunk."""
    server, _ = SERVERS["tsdb"]
    dsn = f"{server}/{DB}_many"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}_many WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}_many")
    created = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("CREATE TABLE source (ts timestamptz NOT NULL, device int4, value float8)")
        conn.execute("CREATE TABLE many (ts timestamptz NOT NULL, device int4, value float8)")
        conn.execute("SELECT create_hypertable('many', by_range('ts', INTERVAL '1 hour'))")
        # The first `due` hours are old; the rest sit in the future, so they stay hot whatever today's date is.
        conn.execute(f"""INSERT INTO source SELECT '2020-01-01'::timestamptz + h * interval '1 hour', d, random()
                         FROM generate_series(0, {due - 1}) h, generate_series(1, 10) d""")
        for start in range(0, total - due, 1000):
            n = min(1000, total - due - start)
            conn.execute(f"""INSERT INTO many SELECT '2100-01-01'::timestamptz + h * interval '1 hour', 1, 0
                             FROM generate_series({start}, {start + n - 1}) h""")
    created = time.perf_counter() - created
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    per_chunk, plan_s, record_s, baseline_per_chunk = [], [], [], []
    for _ in range(runs):
        for cli, costs in [([TSARCHIVE], per_chunk)] + ([(BASELINE, baseline_per_chunk)] if BASELINE else []):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET client_min_messages = warning")
                conn.execute("DROP SCHEMA IF EXISTS archiver CASCADE")
                conn.execute("INSERT INTO many SELECT * FROM source")
                chunks = conn.execute("SELECT count(*) FROM show_chunks('many')").fetchone()[0]
            lake = Path(tempfile.mkdtemp(prefix="tsarchive-many-"))
            env.update(ARCHIVER_DATABASE_URL=dsn, ARCHIVER_LAKE_URL=lake.as_uri(), ARCHIVER_INCLUDE="public.many")
            empty = whole_process([*cli, "run", "--json", "--dry-run"], env)  # start-up and the plan, nothing archived
            measure = whole_process([*cli, "run", "--json"], env)
            report = json.loads(measure.output)
            dropped = sum(1 for s in report["steps"] if s["step"] == "drop" and s["outcome"] == "done")
            if dropped != due or report["failed"]:
                sys.exit(f"many-chunk run dropped {dropped} of {due} chunks: {report['failed']} failed")
            costs.append((measure.wall_s - empty.wall_s) / due)
            shutil.rmtree(lake, ignore_errors=True)
        timing = json.loads(subprocess.run(
            [sys.executable, str(ROOT / "bench" / "bench_archive.py"), "--record-plan", dsn], env=env, check=True,
            capture_output=True, text=True).stdout)
        plan_s.append(timing["plan_s"])
        record_s.append(timing["record_plan_s"])
    return {"chunks": chunks, "due": due, "runs": runs, "setup_s": round(created, 1),
            "fixed_cost_per_chunk_s": median(per_chunk), "plan_s": median(plan_s), "record_plan_s": median(record_s),
            "record_plan_chunks": total,
            **({"baseline_fixed_cost_per_chunk_s": median(baseline_per_chunk)} if baseline_per_chunk else {})}


def record_plan_timing(dsn: str) -> None:
    """In-process: plan every chunk of the database as due, and time recording that plan (prints JSON)."""
    sys.path.insert(0, str(ROOT))
    from shared_code.engine import Engine
    from shared_code.settings import Settings

    settings = Settings(database_url=dsn, retention_days=1, include=["public.many"],
                        lake_url=Path(tempfile.mkdtemp()).as_uri())
    with Engine(settings, clock=lambda: datetime(2200, 1, 1, tzinfo=UTC)) as engine:
        engine.init()
        started = time.perf_counter()
        entries = engine.plan()
        planned = time.perf_counter()
        engine.record_plan(entries)
        recorded = time.perf_counter()
    print(json.dumps({"entries": len(entries), "plan_s": planned - started, "record_plan_s": recorded - planned}))


# -- reader stall ----------------------------------------------------------------------------------
def bench_reader_stall(target: str, rows: int) -> dict[str, Any]:
    """The slowest point query on the chunk's range while `tsarchive run` archives and drops it."""
    fx = Fixture(target, rows)
    fx.reset()
    latencies: list[tuple[float, float]] = []
    stop = threading.Event()

    def probe() -> None:
        with fx.connect() as conn:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute("SELECT count(*) FROM metrics WHERE ts = '2020-01-02 00:00:00+00'").fetchone()
                latencies.append((started, time.perf_counter() - started))
                time.sleep(0.01)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.5)
    measure, report = run_tsarchive(fx, azurite=False)
    time.sleep(0.3)
    stop.set()
    thread.join()
    baseline = statistics.median(lat for _, lat in latencies)
    slowest = max(lat for _, lat in latencies)
    return {"target": target, "rows": rows, "queries": len(latencies), "max_stall_s": round(slowest, 3),
            "median_query_s": round(baseline, 4), "run_wall_s": round(measure.wall_s, 2),
            "drop_s": round(step_seconds(report, "drop"), 3)}


# -- output ----------------------------------------------------------------------------------------
def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = results["chunks"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels = [f"{r['target']} {r['rows'] // 1000}k" for r in chunks]
    order = ["copy", "duckdb", "tsarchive_local", "tsarchive_baseline", "tsarchive_azurite", "tsarchive_compact"]
    paths = sorted({p for r in chunks for p in r["paths"]}, key=order.index)
    width = 0.8 / max(len(paths), 1)
    for i, name in enumerate(paths):
        xs = [j + i * width for j in range(len(chunks))]
        ax1.bar(xs, [r["paths"].get(name, {}).get("rows_per_s", 0) / 1e6 for r in chunks], width, label=name)
        ax2.bar(xs, [r["paths"].get(name, {}).get("peak_rss_mib", 0) for r in chunks], width, label=name)
    for ax, title in ((ax1, "rows/s (millions), whole process"), (ax2, "peak RSS (MiB)")):
        ax.set_xticks([j + width * (len(paths) - 1) / 2 for j in range(len(chunks))], labels)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"tsarchive bench {results['stamp']} ({results['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"\n### {results['stamp']} ({results['machine']})", f"`{results['command']}`", "",
             "Speed is rows/s against rows/s (the other path's wall time over tsarchive's); CPU is user+sys seconds of "
             "the whole process.", "",
             "| chunk | rows | COPY BINARY s | DuckDB s | tsarchive local s | tsarchive Azurite s | speed vs DuckDB "
             "| speed vs COPY | CPU s: tsarchive / DuckDB / COPY | CPU vs DuckDB | peak RSS MiB: tsarchive / DuckDB "
             "| Parquet ÷ DuckDB bytes (standard / compact) | archive s | drop s "
             "| server CPU s: tsarchive / DuckDB / COPY |",
             "|" + "---|" * 15]
    for r in results["chunks"]:
        get = lambda name, key, p=r["paths"]: p.get(name, {}).get(key)  # noqa: E731
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
        lines.append(
            f"| {r['label']} | {r['rows']:,} | {get('copy', 'wall_s')} | {get('duckdb', 'wall_s')} | "
            f"{get('tsarchive_local', 'wall_s')} | {get('tsarchive_azurite', 'wall_s')} | "
            f"{ratio(get('duckdb', 'wall_s'), get('tsarchive_local', 'wall_s'))} | "
            f"{ratio(get('copy', 'wall_s'), get('tsarchive_local', 'wall_s'))} | "
            f"{get('tsarchive_local', 'cpu_s')} / {get('duckdb', 'cpu_s')} / {get('copy', 'cpu_s')} | "
            f"{ratio(get('tsarchive_local', 'cpu_s'), get('duckdb', 'cpu_s'))} | "
            f"{get('tsarchive_local', 'peak_rss_mib')} / {get('duckdb', 'peak_rss_mib')} | "
            f"{ratio(r.get('parquet_bytes'), r.get('duckdb_bytes'))} / {ratio(r.get('compact_bytes'), r.get('duckdb_bytes'))} "
            f"| {r.get('archive_s')} | {r.get('drop_s')} | {get('tsarchive_local', 'server_cpu_s')} / "
            f"{get('duckdb', 'server_cpu_s')} / {get('copy', 'server_cpu_s')} |")
    if results.get("baseline"):
        lines += ["", f"Against the baseline {results['baseline']} (the same chunk, interleaved in this run):", "",
                  "| chunk | rows | baseline s | this checkout s | baseline ÷ this (wall) | baseline CPU s | this CPU s "
                  "| baseline peak RSS MiB | this peak RSS MiB |", "|" + "---|" * 9]
        for r in results["chunks"]:
            base, this = r["paths"].get("tsarchive_baseline", {}), r["paths"].get("tsarchive_local", {})
            if base and this:
                lines.append(f"| {r['label']} | {r['rows']:,} | {base['wall_s']} | {this['wall_s']} | "
                             f"{base['wall_s'] / this['wall_s']:.2f} | {base['cpu_s']} | {this['cpu_s']} | "
                             f"{base['peak_rss_mib']} | {this['peak_rss_mib']} |")
    if results.get("many"):
        m = results["many"]
        lines += ["", f"Many chunks: {m['chunks']:,} chunks, {m['due']} due: fixed cost per chunk "
                      f"{m['fixed_cost_per_chunk_s']} s; plan {m['plan_s']} s and record_plan {m['record_plan_s']} s "
                      f"for {m['record_plan_chunks']:,} chunks (median of {m['runs']})."
                      + (f" The baseline's fixed cost per chunk: {m['baseline_fixed_cost_per_chunk_s']} s."
                         if "baseline_fixed_cost_per_chunk_s" in m else "")]
    for s in results.get("stall", []):
        lines += ["", f"Reader stall ({s['target']}, {s['rows']:,} rows): slowest point query {s['max_stall_s']} s "
                      f"(median {s['median_query_s']} s, {s['queries']} queries) during a {s['run_wall_s']} s run "
                      f"whose drop step took {s['drop_s']} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="chunk sizes, comma separated")
    parser.add_argument("--targets", default="pg,tsdb,tsdbc",
                        help="pg (PostgreSQL 15 partition), tsdb (native TimescaleDB chunk), tsdbc (the same, compressed)")
    parser.add_argument("--paths", default="copy,duckdb,tsarchive_local,tsarchive_azurite,tsarchive_compact")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--many", type=int, default=10_000, help="chunks in the catalog case (0 skips it)")
    parser.add_argument("--many-due", type=int, default=100)
    parser.add_argument("--stall-rows", type=int, default=5_000_000, help="chunk size for the reader-stall probe (0 skips)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run on PostgreSQL 15 only (CI)")
    parser.add_argument("--baseline", metavar="REV", help="also run the tsarchive of this git revision (a worktree), "
                                                          "interleaved with this checkout's: path tsarchive_baseline")
    parser.add_argument("--record-plan", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.record_plan:
        record_plan_timing(args.record_plan)
        return
    if args.smoke:
        args.rows, args.targets, args.runs, args.many, args.stall_rows = "20000", "pg", 1, 0, 0
    targets = [t for t in args.targets.split(",") if t]
    if {"tsdb", "tsdbc"} & set(targets) or args.many:
        try:
            psycopg.connect(f"{SERVERS['tsdb'][0]}/postgres", connect_timeout=3).close()
        except psycopg.OperationalError:
            sys.exit(f"native TimescaleDB is not running on port {NATIVE_PORT}: run `make tsdb-native services`, "
                     "or pass --targets pg --many 0")
    paths = args.paths.split(",")
    if args.baseline:
        worktree = Path(tempfile.mkdtemp(prefix="tsarchive-baseline-")) / "checkout"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(worktree), args.baseline],
                       check=True, capture_output=True)
        BASELINE.extend([sys.executable, "-c", BASELINE_LAUNCHER, str(worktree)])
        paths.insert(paths.index("tsarchive_local") + 1 if "tsarchive_local" in paths else len(paths),
                     "tsarchive_baseline")
    results: dict[str, Any] = {
        "stamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": " ".join(["python", "bench/bench_archive.py", *sys.argv[1:]]), "chunks": [], "stall": [],
    }
    if args.baseline:
        results["baseline"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                             capture_output=True, text=True).stdout.strip()
    for target in targets:
        for rows in (int(r) for r in args.rows.split(",")):
            print(f"== {target} {rows:,} rows", file=sys.stderr, flush=True)
            results["chunks"].append(bench_chunk(target, rows, args.runs, paths))
    if args.many:
        print(f"== {args.many:,} chunks", file=sys.stderr, flush=True)
        results["many"] = bench_many_chunks(args.many, args.many_due, args.runs)
    if args.stall_rows:
        for target in targets:
            print(f"== reader stall {target}", file=sys.stderr, flush=True)
            results["stall"].append(bench_reader_stall(target, args.stall_rows))
    RESULTS.mkdir(exist_ok=True)
    stem = "smoke" if args.smoke else datetime.now(UTC).strftime("%Y%m%dT%H%M")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, RESULTS / f"{stem}.png")
    text = markdown(results)
    print(text)
    if not args.smoke:
        shutil.copy(RESULTS / f"{stem}.json", RESULTS / "latest.json")
        shutil.copy(RESULTS / f"{stem}.png", RESULTS / "latest.png")
        with open(ROOT / "bench" / "RESULTS.md", "a") as out:
            out.write(text)
    if BASELINE:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", BASELINE[-1]], capture_output=True)


if __name__ == "__main__":
    main()
