"""What the Delta commit costs per chunk, against the previous publish step (rename into Hive folders), same run.

Usage: .venv/bin/python bench/bench_commit.py [--rows 1000000] [--runs 3] [--baseline 5558b86] [--target local|azurite|both]
Needs `make services`. The baseline revision is checked out in a temporary git worktree; both versions archive the
same PostgreSQL 15 partition (`tsarchive run --no-drop` semantics: archive + verify, no drop), alternating, each
with a fresh ledger schema and lake. The step times come from the engine's own OpenTelemetry spans
(`extract`, `verify`, `publish`, `archive`), read with an in-memory exporter. Appends the figures to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50"
           "uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:"
           f"{os.environ.get('TSARCHIVE_AZURITE_BLOB_PORT', '10000')}/devstoreaccount1;")


def probe(code: str, dsn: str, lake_url: str, ledger: str, connection_string: str | None) -> dict:
    """Child process: archive the bench partition with the code at `code`; report the span durations."""
    sys.path.insert(0, code)
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from shared_code.engine import Engine
    from shared_code.settings import load_settings

    assert Path(sys.modules["shared_code"].__file__).is_relative_to(code), "imported the wrong shared_code"
    settings = load_settings(database_url=dsn, lake_url=lake_url, partitioned_tables=["public.metrics"],
                             ledger_schema=ledger, lake_connection_string=connection_string)
    started = time.monotonic()
    with Engine(settings) as engine:
        report = engine.run(drop=False)
    wall = time.monotonic() - started
    failed = [s.detail for s in report.steps if s.outcome == "failed"]
    if failed:
        raise SystemExit(f"archive failed: {failed}")
    spans: dict[str, float] = {}
    for span in exporter.get_finished_spans():
        name = span.name.removeprefix("tsarchive.")
        spans[name] = spans.get(name, 0.0) + (span.end_time - span.start_time) / 1e9
    rows = sum(s.rows for s in report.steps if s.step == "archive")
    return {"wall_s": wall, "rows": rows, **{f"{k}_s": v for k, v in spans.items()}}


def seed(rows: int) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_run import seed_pg

    return seed_pg(rows)


def worktree(rev: str) -> str:
    path = Path(tempfile.gettempdir()) / f"tsarchive-baseline-{rev}"
    if not (path / "shared_code").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return str(path)


def lake_for(target: str, scratch: Path) -> tuple[str, str | None]:
    if target == "local":
        return (scratch / f"lake-{uuid.uuid4().hex[:8]}").as_uri(), None
    from azure.storage.blob import BlobServiceClient

    container = f"bench{uuid.uuid4().hex[:10]}"
    BlobServiceClient.from_connection_string(AZURITE).create_container(container)
    return f"abfss://{container}@devstoreaccount1.dfs.core.windows.net/archive", AZURITE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="5558b86")
    parser.add_argument("--target", choices=["local", "azurite", "both"], default="both")
    parser.add_argument("--probe", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        code, dsn, lake_url, ledger, conn = args.probe
        print(json.dumps(probe(code, dsn, lake_url, ledger, conn or None)))
        return

    dsn = seed(args.rows)
    versions = {"previous publish (" + args.baseline + ")": worktree(args.baseline), "Delta commit (this tree)": str(ROOT)}
    targets = ["local", "azurite"] if args.target == "both" else [args.target]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for target in targets:
            for run in range(args.runs):
                for label, code in versions.items():  # alternate A/B so drift hits both alike
                    lake_url, conn = lake_for(target, Path(scratch))
                    ledger = f"bench_{uuid.uuid4().hex[:8]}"
                    out = subprocess.run([PY, __file__, "--probe", code, dsn, lake_url, ledger, conn or ""],
                                         capture_output=True, text=True, cwd=code)
                    if out.returncode:
                        raise SystemExit(f"{label} on {target} failed:\n{out.stderr}")
                    figures = json.loads(out.stdout.strip().splitlines()[-1])
                    results.setdefault((target, label), []).append(figures)
                    print(f"{target:8} run {run + 1} {label:34} publish {figures.get('publish_s', 0):.3f}s "
                          f"archive {figures.get('archive_s', 0):.2f}s", flush=True)
    lines = [f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: Delta commit vs previous publish, {args.rows:,} rows, "
             f"median of {args.runs} ({platform.machine()}, {os.cpu_count()} cores)\n",
             "`.venv/bin/python bench/bench_commit.py " + " ".join(sys.argv[1:]) + "`\n",
             "| lake | code | extract (s) | verify (s) | publish step (s) | archive step (s) | publish share | rows |",
             "|---|---|---|---|---|---|---|---|"]
    for (target, label), runs in results.items():
        extract, verify, publish, archive = (statistics.median(r.get(f"{step}_s", 0.0) for r in runs)
                                             for step in ("extract", "verify", "publish", "archive"))
        lines.append(f"| {target} | {label} | {extract:.2f} | {verify:.2f} | {publish:.3f} | {archive:.2f} | "
                     f"{publish / archive:.1%} | {runs[0]['rows']:,} |")
    for target in targets:
        old, new = (statistics.median(r.get("publish_s", 0.0) for r in results[(target, label)]) for label in versions)
        lines.append(f"\n{target}: the Delta publish step (move + commit) costs {new - old:+.3f} s per chunk against the "
                     f"previous publish ({new / old:.2f}x)." if old else "")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
