"""`tsarchive`: run the archive pipeline in-process, and inspect it."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Archive old TimescaleDB chunks and range partitions to Parquet, verify, then drop them.")

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _console():
    from rich.console import Console

    # Piped output is not truncated to 80 columns.
    return Console(stderr=False, width=None if sys.stdout.isatty() else 200)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _engine(progress=None):
    from . import telemetry
    from .engine import Engine
    from .errors import ArchiverError
    from .settings import load_settings

    try:
        settings = load_settings()
        telemetry.configure()  # exports only when APPLICATIONINSIGHTS_CONNECTION_STRING is set
        return Engine(settings, progress=progress)
    except ArchiverError as error:
        _fail(str(error))


def _guard(action: Callable[[], Any]) -> Any:
    import psycopg

    from .errors import ArchiverError, render_error

    try:
        return action()
    except ArchiverError as error:
        _fail(str(error))
    except psycopg.Error as error:
        _fail(f"database error: {render_error(error)}")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return str(n)


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def init(as_json: bool = JsonOpt) -> None:
    """Create or upgrade the ledger schema (idempotent)."""
    with _engine() as engine:
        version = _guard(engine.init)
    if as_json:
        _print_json({"ledger_schema": engine.settings.ledger_schema, "version": version})
    else:
        typer.echo(f"ledger {engine.settings.ledger_schema} at migration {version}")


@app.command("plan")
def plan_cmd(hypertable: str = typer.Option(None, "--hypertable", help="Only this table (schema.name or name)."),
             show_hot: bool = typer.Option(False, "--all", help="Also list hot chunks."),
             as_json: bool = JsonOpt) -> None:
    """Show what is due, blocked or skipped, and why."""
    from .results import plan_entry_dict

    with _engine() as engine:
        entries = _guard(lambda: engine.plan(hypertable))
    rows = [plan_entry_dict(e) for e in entries if show_hot or e.decision != "hot"]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{sum(1 for e in entries if e.decision == 'due')} due of {len(entries)} chunks")
    for col in ("table", "chunk", "range", "decision", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["table"], r["chunk"], f"{r['range_start']} .. {r['range_end']}", r["decision"], r["reason"])
    _console().print(table)


@app.command()
def run(dry_run: bool = typer.Option(False, "--dry-run", help="Plan only; write nothing."),
        no_drop: bool = typer.Option(False, "--no-drop", help="Archive and verify, but keep the chunks."),
        hypertable: str = typer.Option(None, "--hypertable", help="Only this table (schema.name or name)."),
        as_json: bool = JsonOpt) -> None:
    """Archive, verify and drop every due chunk."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=as_json or not sys.stdout.isatty(), transient=True)
    task = progress.add_task("archiving", total=None)

    lines = not as_json and not sys.stdout.isatty()  # no bar off a terminal: one line per chunk, as it happens

    def on_event(event: str, job, info: dict) -> None:
        if lines and job is not None and event in ("archived", "dropped", "failed"):
            detail = (f"rows={info['rows']} bytes={info['bytes']}" if event == "archived"
                      else f"step={info['step']} error={info['error']}" if event == "failed" else f"rows={job.row_count}")
            seconds = f" seconds={info['seconds']:.2f}" if "seconds" in info else ""
            typer.echo(f"{event} table={job.table} chunk={job.chunk_name} job={job.id} {detail}{seconds}", err=True)
        if event == "start":
            progress.update(task, total=info["jobs"] * (1 if no_drop else 2))
        elif event in ("archived", "dropped", "failed"):
            progress.advance(task)
            if job is not None:
                progress.update(task, description=f"{event} {job.chunk_name}")

    with progress, _engine(on_event) as engine:
        report = _guard(lambda: engine.run(hypertable=hypertable, dry_run=dry_run or None, drop=not no_drop))
    data = report.as_dict()
    if as_json:
        _print_json(data)
    else:
        due = [p for p in data["plan"] if p["decision"] == "due"]
        blocked = [p for p in data["plan"] if p["decision"] == "blocked"]
        if report.dry_run:
            typer.echo(f"dry run: {len(due)} chunk(s) due, {len(blocked)} blocked; nothing written")
            for p in due:
                typer.echo(f"  would archive {p['chunk']} ({p['range_start']} .. {p['range_end']})")
        else:
            archived = [s for s in report.steps if s.step == "archive" and s.outcome == "done"]
            dropped = [s for s in report.steps if s.step == "drop" and s.outcome == "done"]
            typer.echo(f"archived {len(archived)} chunk(s), {data['rows']} rows, {_human_bytes(data['bytes'])}; "
                       f"dropped {len(dropped)}; blocked {len(blocked)}; failed {len(report.failed)}")
        for p in blocked:
            typer.echo(f"  blocked {p['chunk']}: {p['reason']}")
        for s in report.failed:
            typer.echo(f"  FAILED {s.step} {s.chunk} (job {s.job_id}): {s.detail}", err=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def retry(job: int = typer.Argument(..., help="A failed job's id (see `tsarchive jobs --state failed`)."),
          no_drop: bool = typer.Option(False, "--no-drop", help="Archive and verify, but keep the chunk."),
          as_json: bool = JsonOpt) -> None:
    """Give a failed job a fresh attempt budget (clearing a terminal mark) and run it now."""
    with _engine() as engine:
        _guard(engine.init)
        fresh = _guard(lambda: engine.ledger.reset_for_retry(job))
        results = _guard(lambda: engine.process(fresh, drop=not no_drop))
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        for r in results:
            typer.echo(f"{r.step} {r.chunk} (job {r.job_id}): {r.outcome}{f' - {r.detail}' if r.detail else ''}")
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def status(as_json: bool = JsonOpt) -> None:
    """Per table: hot, due, archived, dropped, failed and blocked chunks, and bytes moved."""
    with _engine() as engine:
        rows = _guard(engine.status)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="archive status")
    for col in ("table", "hot", "due", "archived", "dropped", "failed", "blocked", "oldest unarchived", "rows", "bytes",
                "in the lake, by tier"):
        table.add_column(col, justify="right" if col not in ("table", "oldest unarchived", "in the lake, by tier") else "left")
    for r in rows:
        oldest = r["oldest_unarchived"]["range_start"] if r["oldest_unarchived"] else "-"
        tiers = r.get("bytes_by_tier")
        shown = ", ".join(f"{k} {_human_bytes(v)}" for k, v in sorted(tiers.items())) if tiers else "-"
        table.add_row(r["table"], *(str(r[k]) for k in ("hot", "due", "archived", "dropped", "failed", "blocked")),
                      str(oldest), str(r["rows_archived"]), _human_bytes(r["bytes_archived"]), shown)
    _console().print(table)


@app.command()
def jobs(state: list[str] = typer.Option(None, "--state", help="Filter by state (repeatable)."),
         hypertable: str = typer.Option(None, "--hypertable"),
         limit: int = typer.Option(50, "--limit", min=1), offset: int = typer.Option(0, "--offset", min=0),
         as_json: bool = JsonOpt) -> None:
    """List ledger jobs, newest first."""
    from .ledger.jobs import JobState

    valid = {s.value for s in JobState}
    bad = [s for s in state or [] if s not in valid]
    if bad:
        _fail(f"unknown state {', '.join(bad)}; use one of {', '.join(sorted(valid))}")
    with _engine() as engine:
        _guard(engine.init)
        found = _guard(lambda: engine.ledger.jobs(state or None, table=hypertable, limit=limit, offset=offset))
    if as_json:
        _print_json([j.as_dict() for j in found])
        return
    from rich.table import Table

    table = Table(title=f"{len(found)} job(s)")
    for col in ("id", "chunk", "state", "attempts", "rows", "bytes", "updated", "note"):
        table.add_column(col)
    for j in found:
        table.add_row(str(j.id), f"{j.chunk_schema}.{j.chunk_name}", str(j.state), str(j.attempts),
                      str(j.row_count or ""), _human_bytes(j.byte_count) if j.byte_count else "",
                      j.updated_at.strftime("%Y-%m-%d %H:%M:%S"), j.last_error or j.reason or "")
    _console().print(table)


@app.command()
def verify(job: list[int] = typer.Option(None, "--job", help="Only these job ids (repeatable)."),
           hypertable: str = typer.Option(None, "--hypertable"),
           deep: bool = typer.Option(False, "--deep", help="Recovery drill: decode every row group and recompute "
                                     "each archive's content hash."),
           sample: int = typer.Option(None, "--sample", min=1, help="Check this many archives, chosen at random."),
           as_json: bool = JsonOpt) -> None:
    """Re-read archived files (existence, SHA-256, footer rows) and each Delta table against the ledger."""
    with _engine() as engine:
        if deep and not job:
            results = _guard(lambda: engine.drill(sample, table=hypertable))  # recorded: status shows the last drill
        else:
            results = _guard(lambda: engine.verify(job or None, table=hypertable, deep=deep, sample=sample))
    bad = [r for r in results if r.outcome == "failed"]
    offline = [r for r in results if r.outcome == "offline"]
    checked = len(results) - len(offline)
    if as_json:
        _print_json({"checked": checked, "ok": checked - len(bad), "failed": len(bad), "offline": len(offline),
                     "offline_bytes": sum(r.bytes for r in offline), "results": [r.as_dict() for r in results]})
    else:
        typer.echo(f"verified {checked} archive(s): {checked - len(bad)} ok, {len(bad)} failed"
                   + (f"; {len(offline)} offline (Archive tier, {_human_bytes(sum(r.bytes for r in offline))}), "
                      "not read" if offline else ""))
        for r in bad:
            typer.echo(f"  {f'job {r.job_id}' if r.job_id else 'table'} {r.chunk}: {r.detail}", err=True)
        for r in offline[:5]:
            typer.echo(f"  offline: job {r.job_id} {r.chunk}: {r.detail}")
    if bad:  # offline files are not damage: with every online file passing, the exit code is 0
        raise typer.Exit(1)


@app.command()
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
        _fail("give a job id, or --hypertable SCHEMA.TABLE with --from/--to (not both)")
    if job is not None:
        if into or start or end or dry_run or allow_duplicates or skip_present:
            _fail("--from, --to, --into, --dry-run, --allow-duplicates and --skip-present go with --hypertable")
        _restore_job(job, target, replace, as_json)
        return
    if target or replace:
        _fail("--target and --replace go with a job id; with --hypertable use --into")
    from .errors import ArchiverError, render_error
    from .restore import parse_bound, restore_range

    try:
        low, high = parse_bound(start, "--from"), parse_bound(end, "--to")
    except ArchiverError as error:
        _fail(str(error))
    if low is None and high is None:
        _fail("give --from and/or --to: the time range to restore")
    options = {"allow_duplicates": allow_duplicates, "skip_present": skip_present}
    with _engine() as engine, _RestoreProgress(enabled=not as_json and not dry_run) as progress:
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

        result = _guard(run)
    if as_json:
        _print_json(result.as_dict())
        return
    chunks = result.chunks
    if dry_run:
        if result.must_rehydrate:
            need = result.must_rehydrate
            typer.echo(f"dry run: {need['files']} file(s), {_human_bytes(need['bytes'])}, of {hypertable} are in the "
                       f"Archive tier (offline) and must be rehydrated before this restore: {need['command']}")
        else:
            typer.echo(f"dry run: would restore {result.rows} rows from {len(chunks)} chunk(s) of {hypertable} into "
                       f"{result.target}{' (a new table)' if result.created_target else ''}")
        for c in chunks:
            typer.echo(f"  job {c.job_id:>6}  {c.chunk}  {c.rows} rows  {_human_bytes(c.bytes)} archived"
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

    with _engine() as engine:
        result = _guard(lambda: run_restore(engine, job, target, replace))
    if as_json:
        _print_json(result.as_dict())
    else:
        typer.echo(f"restored {result.rows} rows of job {job} into {result.target}; row count and row hash match the archive")


@app.command()
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
        _fail(f"--priority {priority!r}: use standard or high")
    if tier.lower() not in ("hot", "cool", "cold"):
        _fail(f"--tier {tier!r}: use hot, cool or cold (Archive is where they are)")
    try:
        low, high = parse_bound(start, "--from"), parse_bound(end, "--to")
    except ArchiverError as error:
        _fail(str(error))
    with _engine() as engine:
        report = _guard(lambda: rehydrate_range(engine, hypertable, low, high, tier=tier.capitalize(),
                                                priority=priority.capitalize()))
    if as_json:
        _print_json(report)
        return
    typer.echo(f"{hypertable}: {report['files']} file(s) of {report['chunks']} chunk(s): {report['requested']} "
               f"rehydration(s) started now; {report['pending']} still offline, {report['online']} online. "
               f"{report['note']}")


@app.command()
def lifecycle(archive_after_days: int = typer.Option(0, "--archive-after-days", min=0,
                                                     help="Opt in to the offline Archive tier for data files after N days."),
              cool_after_days: int = typer.Option(30, "--cool-after-days", min=0),
              cold_after_days: int = typer.Option(90, "--cold-after-days", min=0),
              as_json: bool = JsonOpt) -> None:
    """The archive account's lifecycle policy: online tiers for everything, the Archive tier for data files only."""
    from .ledger.jobs import JobState
    from .storage import lifecycle as lc

    with _engine() as engine:
        engine.init()
        jobs = _guard(lambda: engine.ledger.jobs([JobState.ARCHIVED, JobState.DROPPED], limit=10_000_000))
        if engine.lake.target.is_local:
            _fail("ARCHIVER_LAKE_URL is a local folder: lifecycle policies are an Azure storage feature")
        root = engine.lake.target.root
    tables = sorted({j.table_path for j in jobs if j.table_path})
    days = lc.TierDays(cool=cool_after_days, cold=cold_after_days, archive=archive_after_days)
    try:
        document = lc.policy(root, days, tables)
    except ValueError as bad:
        _fail(str(bad))
    prefixes = lc.offline_prefixes(root, tables) if archive_after_days else []
    if as_json:
        _print_json({"tables": tables, "offline_tier_prefixes": prefixes, "bicep_parameter": ",".join(prefixes),
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


@app.command()
def query(sql_text: str = typer.Argument(..., metavar="SQL", help="One DuckDB SQL statement."),
          as_json: bool = JsonOpt, as_csv: bool = typer.Option(False, "--csv", help="Print CSV.")) -> None:
    """Query the archive with DuckDB, without the database: each archived table is a view named schema.table."""
    from .errors import ArchiverError
    from .query import run_query
    from .settings import load_settings
    from .storage.lake import Lake

    try:
        settings = load_settings(database_url=os.environ.get("ARCHIVER_DATABASE_URL") or "postgresql:///unused")
        conn_string = settings.lake_connection_string.get_secret_value() if settings.lake_connection_string else None
        lake = Lake(settings.lake_url, conn_string, settings.lake_client_id)
        columns, rows = run_query(lake, sql_text, conn_string)
    except ArchiverError as error:
        _fail(str(error))
    if as_json:
        _print_json([dict(zip(columns, (_plain(v) for v in row), strict=True)) for row in rows])
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
        _console().print(table)


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly form of a DuckDB value."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal | UUID | timedelta):
        return str(value)
    return value


def main() -> None:
    app()


if __name__ == "__main__":
    main()
