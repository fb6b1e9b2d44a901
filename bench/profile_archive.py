"""Where the CPU of `tsarchive run` (or `tsarchive restore`) goes: py-spy's native sampling profile of one whole
process, folded into the categories docs/performance.md reports.

Usage: .venv/bin/python bench/profile_archive.py [--rows 5040000] [--target tsdb|tsdbc|pg] [--restore]
Needs `make services` (and the native TimescaleDB for tsdb/tsdbc) and py-spy (`pip install py-spy`). The chunk is the
benchmark's (bench_archive.Fixture). With --restore, the chunk is archived first and one day of it is restored.
Samples are taken 100 times a second on every thread that is running (not waiting): shares of busy time.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_archive import TSARCHIVE, Fixture  # noqa: E402 - the benchmark's chunk

# First match wins, on the whole folded stack.
CATEGORIES = [
    ("lock and queue waits between threads", ("PyThread_acquire_lock",), True),
    ("start-up: imports", ("_find_and_load",), False),
    ("SHA-256 of the bytes as they are written", ("HashingSink.write",), False),
    ("Parquet read and row-group choice (restore)", ("lake_batches",), False),
    ("Parquet: zstd", ("ZSTD_", "HUF_", "HIST_", "FSE_"), False),
    ("Parquet: statistics (min/max)", ("GetMinMax", "TypedComparator"), False),
    ("Parquet: dictionary encoding", ("DictEncoder",), False),
    ("Parquet: other encoding (levels, PLAIN, pages)", ("parquet::", "write_table", "ParquetWriter"), False),
    ("SHA-256 read-back before the commit (verify)", ("verify_file",), False),
    ("archive re-check: SHA-256 read-back and Delta membership (before a drop or a restore)",
     ("ArchiveChecker.problems", "ArchiveChecker._table_holds"), False),
    ("row hash (restore proof)", ("row_hash",), False),
    ("ADBC: COPY BINARY out of PostgreSQL, decoded to Arrow", ("adbcpq::PostgresCopy", "PostgresCopyStreamReader",
                                                               "pqGetCopyData", "query_batches", "convert (shared"), False),
    ("ADBC: Arrow into PostgreSQL (COPY BINARY in)", ("ArrowCursor.ingest",), False),
    ("Arrow fix-ups and partition split", ("convert_batch", "PartitionSpec.split", "direct_batches"), False),
    ("Delta log (delta-rs)", ("deltalake", "ArchiveTable"), False),
    ("ADBC connect (reads pg_type)", ("ArrowConnection.__init__",), False),
]


def fold(path: Path) -> list[tuple[str, float]]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        samples = int(n)
        for name, keys, waiting in CATEGORIES:
            if any(k in stack for k in keys) and (not waiting or "shared_code" not in stack):
                counts[name] += samples
                break
        else:
            counts["other (interpreter, allocator, libpq)"] += samples
        total += samples
    busy = total - counts.pop("lock and queue waits between threads", 0)
    return [(name, 100 * n / busy) for name, n in counts.most_common()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_040_000)
    parser.add_argument("--target", default="tsdb")
    parser.add_argument("--restore", action="store_true")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fx = Fixture(args.target, args.rows)
    fx.reset()
    lake = Path(tempfile.mkdtemp(prefix="tsarchive-profile-"))
    env = fx.env(lake.as_uri(), azurite=False)
    out = lake / "profile.txt"
    command = [TSARCHIVE, "run", "--json"]
    if args.restore:
        subprocess.run(command, env=env, check=True, capture_output=True)
        command = [TSARCHIVE, "restore", "--hypertable", "public.metrics", "--from", "2020-01-01T00:00:00+00:00",
                   "--to", "2020-01-02T00:00:00+00:00", "--into", "public.profiled", "--json"]
    subprocess.run([spy, "record", "--native", "-r", "100", "--format", "raw", "-o", str(out), "--", *command],
                   env={**env, **os.environ.copy(), **env}, check=True, capture_output=True)
    print(f"| {'restore' if args.restore else 'archive + verify + drop'}: share of busy samples | % |")
    print("|---|---|")
    for name, share in fold(out):
        print(f"| {name} | {share:.1f} |")
    shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
