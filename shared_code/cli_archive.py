"""The `tsarchive` commands that read the archive itself: restore, rehydrate, lifecycle rules and query.

Registered on the app by cli.py; heavy imports (pyarrow, duckdb) stay inside each command."""

from __future__ import annotations

import os
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import typer

from .cli_common import JsonOpt, console, fail, guard, human_bytes, open_engine, print_json


def restore(job: int = typer.Argument(None, help="Job id (see `tsarchive jobs --state dropped`); or use --hypertable."),
            hypertable: str = typer.Option(None, "--hypertable", help="schema.table whose archived rows to restore."),
            start: str = typer.Option(None, "--from", help="ISO 8601 (UTC unless an offset is given); inclusive."),
            end: str = typer.Option(None, "--to", help="ISO 8601; exclusive. Integers for integer time columns."),
            into: str = typer.Option(None, "--into", help="schema.table to restore into: an existing table (the "
                                     "original hypertable too) or a new one [archiver_restore.<table>__<from>_<to>]."),
            dry_run: bool = typer.Option(False, "--dry-run", help="List the chunks, rows and bytes; change nothing."),
            allow_duplicates: bool = typer.Option(False, "--allow-duplicates",
                                                  help="Insert rows even if the target already holds them."),
            skip_present: bool = typer.Option(False, "--skip-present",
                                              help="Skip chunks whose rows the target already wholly holds."),
            target: str = typer.Option(None, "--target", help="With JOB: schema.table to create "
                                       "[archiver_restore.<table>__<chunk>]."),
            replace: bool = typer.Option(False, "--replace", help="With JOB: overwrite a table restore created."),
            as_json: bool = JsonOpt) -> None:
    """Restore archived rows into PostgreSQL and prove them equal to the archive (count and row hash per chunk)."""
    if (job is None) == (hypertable is None):
        fail("give a job id, or --hypertable SCHEMA.TABLE with --from/--to (not both)")
    if job is not None:
        if into or start or end or dry_run or allow_duplicates or skip_present:
            fail("--from, --to, --into, --dry-run, --allow-duplicates and --skip-present go with --hypertable")
        _restore_job(job, target, replace, as_json)
        return
    if target or replace:
        fail("--target and --replace go with a job id; with --hypertable use --into")
    from .errors import ArchiverError, render_error
    from .restore import parse_bound, restore_range

    try:
        low, high = parse_bound(start, "--from"), parse_bound(end, "--to")
    except ArchiverError as error:
        fail(str(error))
    if low is None and high is None:
        fail("give --from and/or --to: the time range to restore")
    options = {"allow_duplicates": allow_duplicates, "skip_present": skip_present}
    with open_engine() as engine, _RestoreProgress(enabled=not as_json and not dry_run) as progress:
        engine.init()
        restore_id = None if dry_run else engine.ledger.open_restore(hypertable, start, end, into, options, "cli",
                                                                     queued=False)

        def run():
            try:
                done = restore_range(engine, hypertable, low, high, into=into, dry_run=dry_run,
                                     allow_duplicates=allow_duplicates, skip_present=skip_present, progress=progress)
            except Exception as error:
                if restore_id is not None:
                    engine.ledger.fail_restore(restore_id, render_error(error))
                raise
            if restore_id is not None:
                engine.ledger.finish_restore(restore_id, done.rows, done.as_dict())
            return done

        result = guard(run)
    if as_json:
        print_json(result.as_dict())
        return
    chunks = result.chunks
    if dry_run:
        if result.must_rehydrate:
            need = result.must_rehydrate
            typer.echo(f"dry run: {need['files']} file(s), {human_bytes(need['bytes'])}, of {hypertable} are in the "
                       f"Archive tier (offline) and must be rehydrated before this restore: {need['command']}")
        else:
            typer.echo(f"dry run: would restore {result.rows} rows from {len(chunks)} chunk(s) of {hypertable} into "
                       f"{result.target}{' (a new table)' if result.created_target else ''}")
        for c in chunks:
            typer.echo(f"  job {c.job_id:>6}  {c.chunk}  {c.rows} rows  {human_bytes(c.bytes)} archived"
                       + ("  [offline]" if c.status == "offline" else ""))
        return
    restored = [c for c in chunks if c.status == "restored"]
    typer.echo(f"restored {result.rows} rows from {len(restored)} chunk(s) of {hypertable} into {result.target}; "
               "each chunk's row count and row hash match the archive")
    for c in chunks:
        if c.status != "restored":
            why = "already there, skipped" if c.status == "present" else "no rows in range"
            typer.echo(f"  {c.chunk} (job {c.job_id}): {why}")


class _RestoreProgress:
    """A progress bar on a terminal; one line per chunk otherwise (logs and CI see progress, not silence)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar, self.task = enabled, None, None
        self.tty = sys.stderr.isatty()

    def __enter__(self):
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event: str, info: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if event == "chunk":
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(f"{info['chunk']} (job {info['job_id']})", total=info["rows"] or None)
            elif event == "rows" and self.task is not None:
                self.bar.advance(self.task, info["rows"])
        elif event == "chunk_done":
            typer.echo(f"restore: {info['chunk']} (job {info['job_id']}) {info['status']} {info['rows']} rows "
                       f"in {info['seconds']:.2f} s", err=True)


def _restore_job(job: int, target: str | None, replace: bool, as_json: bool) -> None:
    from .restore import restore as run_restore

    with open_engine() as engine:
        result = guard(lambda: run_restore(engine, job, target, replace))
    if as_json:
        print_json(result.as_dict())
    else:
        typer.echo(f"restored {result.rows} rows of job {job} into {result.target}; row count and row hash match the archive")


def rehydrate(hypertable: str = typer.Option(..., "--hypertable", help="schema.table whose archive to bring online."),
              start: str = typer.Option(None, "--from", help="ISO 8601 (or an integer); inclusive. Default: all."),
              end: str = typer.Option(None, "--to", help="ISO 8601 (or an integer); exclusive. Default: all."),
              priority: str = typer.Option("standard", "--priority", help="standard (up to 15 h) or high (about 1 h, "
                                           "costs more)."),
              tier: str = typer.Option("hot", "--tier", help="The online tier to bring them to: hot, cool or cold."),
              as_json: bool = JsonOpt) -> None:
    """Start rehydrating, from the Archive tier, exactly the files a range needs; run again to see what is ready."""
    from .errors import ArchiverError
    from .restore import parse_bound, rehydrate_range

    if priority.lower() not in ("standard", "high"):
        fail(f"--priority {priority!r}: use standard or high")
    if tier.lower() not in ("hot", "cool", "cold"):
        fail(f"--tier {tier!r}: use hot, cool or cold (Archive is where they are)")
    try:
        low, high = parse_bound(start, "--from"), parse_bound(end, "--to")
    except ArchiverError as error:
        fail(str(error))
    with open_engine() as engine:
        report = guard(lambda: rehydrate_range(engine, hypertable, low, high, tier=tier.capitalize(),
                                                priority=priority.capitalize()))
    if as_json:
        print_json(report)
        return
    typer.echo(f"{hypertable}: {report['files']} file(s) of {report['chunks']} chunk(s): {report['requested']} "
               f"rehydration(s) started now; {report['pending']} still offline, {report['online']} online. "
               f"{report['note']}")


def lifecycle(archive_after_days: int = typer.Option(0, "--archive-after-days", min=0,
                                                     help="Opt in to the offline Archive tier for data files after N days."),
              cool_after_days: int = typer.Option(30, "--cool-after-days", min=0),
              cold_after_days: int = typer.Option(90, "--cold-after-days", min=0),
              as_json: bool = JsonOpt) -> None:
    """The archive account's lifecycle policy: online tiers for everything, the Archive tier for data files only."""
    from .ledger.jobs import JobState
    from .storage import lifecycle as lc

    with open_engine() as engine:
        engine.init()
        jobs = guard(lambda: engine.ledger.jobs([JobState.ARCHIVED, JobState.DROPPED], limit=10_000_000))
        if engine.lake.target.is_local:
            fail("ARCHIVER_LAKE_URL is a local folder: lifecycle policies are an Azure storage feature")
        root = engine.lake.target.root
    tables = sorted({j.table_path for j in jobs if j.table_path})
    days = lc.TierDays(cool=cool_after_days, cold=cold_after_days, archive=archive_after_days)
    try:
        document = lc.policy(root, days, tables)
    except ValueError as bad:
        fail(str(bad))
    prefixes = lc.offline_prefixes(root, tables) if archive_after_days else []
    if as_json:
        print_json({"tables": tables, "offline_tier_prefixes": prefixes, "bicep_parameter": ",".join(prefixes),
                     "policy": document})
        return
    typer.echo(f"{len(tables)} archived table(s) under {root}/; Cool after {cool_after_days} d, Cold after "
               f"{cold_after_days} d (online, whole filesystem).")
    if not archive_after_days:
        typer.echo("The Archive tier is off: every blob stays online (readable at once). Opt in with "
                   "--archive-after-days N; offline files cannot be queried, drilled or restored until rehydrated.")
        return
    typer.echo(f"Archive tier after {archive_after_days} d for data files only ({len(prefixes)} prefixes in "
               f"{len(document['rules']) - 1} rule(s)); the Delta log and the manifests stay online. Apply with:")
    typer.echo(f"  azd env set ARCHIVER_ARCHIVE_TIER_AFTER_DAYS {archive_after_days}")
    typer.echo(f"  azd env set ARCHIVER_OFFLINE_TIER_PREFIXES '{','.join(prefixes)}'")
    typer.echo("  azd provision    # re-run this command and re-provision whenever a new table is first archived")


def query(sql_text: str = typer.Argument(..., metavar="SQL", help="One DuckDB SQL statement."),
          live: bool = typer.Option(False, "--live", help="Each managed table is its whole history: rows still in "
                                    "PostgreSQL and archived rows, each exactly once, in one snapshot (needs the "
                                    "database; read-only)."),
          as_json: bool = JsonOpt, as_csv: bool = typer.Option(False, "--csv", help="Print CSV.")) -> None:
    """Query the archive with DuckDB: each archived table is a view named schema.table (archived rows only, no
    database needed); with --live, each managed table's live and archived rows together."""
    from .errors import ArchiverError
    from .settings import load_settings
    from .storage.lake import Lake

    try:
        if live:
            from .live_query import run_live_query

            settings = load_settings()
        else:
            from .query import run_query

            settings = load_settings(database_url=os.environ.get("ARCHIVER_DATABASE_URL") or "postgresql:///unused")
        conn_string = settings.lake_connection_string.get_secret_value() if settings.lake_connection_string else None
        lake = Lake(settings.lake_url, conn_string, settings.lake_client_id)
        if live:
            result = run_live_query(settings, lake, sql_text, conn_string)
            columns, rows = result.columns, result.rows
        else:
            columns, rows = run_query(lake, sql_text, conn_string)
    except ArchiverError as error:
        fail(str(error))
    if as_json:
        print_json([dict(zip(columns, (_plain(v) for v in row), strict=True)) for row in rows])
    elif as_csv:
        import csv

        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows([_plain(v) for v in row] for row in rows)
    else:
        from rich.table import Table

        table = Table(title=f"{len(rows)} row(s)")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("NULL" if v is None else str(_plain(v)) for v in row))
        console().print(table)


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly form of a DuckDB value."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal | UUID | timedelta):
        return str(value)
    return value
