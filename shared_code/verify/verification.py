"""Verification and the recovery drill: re-reading archives against the ledger, offline files told apart."""

from __future__ import annotations

import logging
import random
import time

from .. import telemetry
from ..errors import OfflineError
from ..ledger.jobs import Job, JobState, Ledger
from ..results import StepResult, rehydrate_command
from ..storage.blob import offline_summary
from ..storage.lake import Lake
from .archive_check import ArchiveChecker

log = logging.getLogger("tsarchive")


def verify_archives(ledger: Ledger, lake: Lake, checker: ArchiveChecker, *, job_ids: list[int] | None = None,
                    table: str | None = None, deep: bool = False, sample: int | None = None) -> list[StepResult]:
    """Re-check archives against the ledger; deep decodes every file and recomputes the content hash.

    Offline files (Archive tier) are reported as offline, never as failures; with `sample`, jobs are taken in random
    order and offline ones skipped until `sample` online ones were read.
    """
    jobs: list[Job | None] = [ledger.get(i) for i in job_ids] if job_ids else list(ledger.jobs(
        [JobState.ARCHIVED, JobState.DROPPED], table=table, limit=1_000_000))
    if sample is not None and sample < len(jobs):
        jobs = random.sample(jobs, len(jobs))
    results = []
    checked = 0
    for job in jobs:
        if job is None:
            continue
        if sample is not None and checked >= sample:
            break
        started = time.monotonic()
        offline = lake.offline(job.lake_paths)
        if offline:  # not readable now, and not damaged: told apart, never counted as a failure
            results.append(StepResult(job.id, job.chunk.qualified_chunk, "verify", "offline",
                                      f"{offline_summary(offline)}; bring it back with: "
                                      f"{rehydrate_command(job.table, job.range_start, job.range_end)}",
                                      rows=job.row_count or 0, bytes=sum(f.bytes for f in offline),
                                      seconds=time.monotonic() - started))
            continue
        checked += 1
        try:
            problems = checker.problems(job, deep=deep)
        except OfflineError as log_offline:  # the table's Delta log itself is in the Archive tier
            checked -= 1
            results.append(StepResult(job.id, job.chunk.qualified_chunk, "verify", "offline", str(log_offline),
                                      rows=job.row_count or 0, seconds=time.monotonic() - started))
            continue
        ok = "ok" if job.table_path else "ok (archived before the Delta layout: Parquet files outside the table)"
        results.append(StepResult(job.id, job.chunk.qualified_chunk, "verify", "failed" if problems else "done",
                                  "; ".join(problems) or ok, rows=job.row_count or 0, bytes=job.byte_count or 0,
                                  seconds=time.monotonic() - started))
    for table_path in sorted(checker.live):
        strays = checker.uncommitted_files(table_path)
        if strays:
            results.append(StepResult(0, table_path, "verify", "failed",
                                      f"{len(strays)} visible data file(s) no Delta commit holds, e.g. {strays[0]}: "
                                      "plain Parquet readers would see their rows. They are left by an interrupted "
                                      "archive; the next run of its job removes them."))
    return results


def run_drill(ledger: Ledger, lake: Lake, checker: ArchiveChecker, *, sample: int | None = None,
              table: str | None = None, drill_id: int | None = None) -> list[StepResult]:
    """verify --deep on every archive (or a random sample), recorded in the ledger (as drill `drill_id` when it was
    queued); offline archives are skipped and counted, not read."""
    everything = verify_archives(ledger, lake, checker, table=table, deep=True, sample=sample)
    results = [r for r in everything if r.outcome != "offline"]  # skipped: not read, so neither passed nor failed
    skipped = len(everything) - len(results)
    if skipped:
        log.warning("drill: %d archive(s) skipped as offline (Archive tier)", skipped)
    failed = [r for r in results if r.outcome != "done"]
    problems = [{"job_id": r.job_id, "chunk": r.chunk, "problem": r.detail} for r in failed]
    if drill_id is None:
        ledger.record_drill(len(results), problems, offline=skipped)
    else:
        ledger.finish_drill(drill_id, len(results), problems, offline=skipped)
    telemetry.drill_checked.add(len(results))
    telemetry.drill_failed.add(len(failed))
    return everything
