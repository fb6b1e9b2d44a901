"""`tsarchive`: run the archive pipeline in-process, and inspect it."""

from __future__ import annotations

import logging
import sys

import typer

from .cli_archive import lifecycle, query, rehydrate, restore
from .cli_common import JsonOpt, console, fail, guard, human_bytes, open_engine, print_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Archive old TimescaleDB chunks and range partitions to Parquet, verify, then drop them.")


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each step.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def init(as_json: bool = JsonOpt) -> None:
    """Create or upgrade the ledger schema (idempotent)."""
    with open_engine() as engine:
        version = guard(engine.init)
    if as_json:
        print_json({"ledger_schema": engine.settings.ledger_schema, "version": version})
    else:
        typer.echo(f"ledger {engine.settings.ledger_schema} at migration {version}")


@app.command("plan")
def plan_cmd(hypertable: str = typer.Option(None, "--hypertable", help="Only this table (schema.name or name)."),
             show_hot: bool = typer.Option(False, "--all", help="Also list hot chunks."),
             as_json: bool = JsonOpt) -> None:
    """Show what is due, blocked or skipped, and why."""
    from .results import plan_entry_dict

    with open_engine() as engine:
        entries = guard(lambda: engine.plan(hypertable))
    rows = [plan_entry_dict(e) for e in entries if show_hot or e.decision != "hot"]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{sum(1 for e in entries if e.decision == 'due')} due of {len(entries)} chunks")
    for col in ("table", "chunk", "range", "decision", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["table"], r["chunk"], f"{r['range_start']} .. {r['range_end']}", r["decision"], r["reason"])
    console().print(table)


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

    with progress, open_engine(on_event) as engine:
        report = guard(lambda: engine.run(hypertable=hypertable, dry_run=dry_run or None, drop=not no_drop))
    data = report.as_dict()
    if as_json:
        print_json(data)
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
            typer.echo(f"archived {len(archived)} chunk(s), {data['rows']} rows, {human_bytes(data['bytes'])}; "
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
    with open_engine() as engine:
        guard(engine.init)
        fresh = guard(lambda: engine.ledger.reset_for_retry(job))
        results = guard(lambda: engine.process(fresh, drop=not no_drop))
    if as_json:
        print_json([r.as_dict() for r in results])
    else:
        for r in results:
            typer.echo(f"{r.step} {r.chunk} (job {r.job_id}): {r.outcome}{f' - {r.detail}' if r.detail else ''}")
    if any(r.outcome == "failed" for r in results):
        raise typer.Exit(1)


@app.command()
def status(as_json: bool = JsonOpt) -> None:
    """Per table: hot, due, archived, dropped, failed and blocked chunks, and bytes moved."""
    with open_engine() as engine:
        rows = guard(engine.status)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="archive status")
    for col in ("table", "hot", "due", "archived", "dropped", "failed", "blocked", "oldest unarchived", "rows", "bytes",
                "in the lake, by tier"):
        table.add_column(col, justify="right" if col not in ("table", "oldest unarchived", "in the lake, by tier") else "left")
    for r in rows:
        oldest = r["oldest_unarchived"]["range_start"] if r["oldest_unarchived"] else "-"
        tiers = r.get("bytes_by_tier")
        shown = ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(tiers.items())) if tiers else "-"
        table.add_row(r["table"], *(str(r[k]) for k in ("hot", "due", "archived", "dropped", "failed", "blocked")),
                      str(oldest), str(r["rows_archived"]), human_bytes(r["bytes_archived"]), shown)
    console().print(table)


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
        fail(f"unknown state {', '.join(bad)}; use one of {', '.join(sorted(valid))}")
    with open_engine() as engine:
        guard(engine.init)
        found = guard(lambda: engine.ledger.jobs(state or None, table=hypertable, limit=limit, offset=offset))
    if as_json:
        print_json([j.as_dict() for j in found])
        return
    from rich.table import Table

    table = Table(title=f"{len(found)} job(s)")
    for col in ("id", "chunk", "state", "attempts", "rows", "bytes", "updated", "note"):
        table.add_column(col)
    for j in found:
        table.add_row(str(j.id), f"{j.chunk_schema}.{j.chunk_name}", str(j.state), str(j.attempts),
                      str(j.row_count or ""), human_bytes(j.byte_count) if j.byte_count else "",
                      j.updated_at.strftime("%Y-%m-%d %H:%M:%S"), j.last_error or j.reason or "")
    console().print(table)


@app.command()
def verify(job: list[int] = typer.Option(None, "--job", help="Only these job ids (repeatable)."),
           hypertable: str = typer.Option(None, "--hypertable"),
           deep: bool = typer.Option(False, "--deep", help="Recovery drill: decode every row group and recompute "
                                     "each archive's content hash."),
           sample: int = typer.Option(None, "--sample", min=1, help="Check this many archives, chosen at random."),
           as_json: bool = JsonOpt) -> None:
    """Re-read archived files (existence, SHA-256, footer rows) and each Delta table against the ledger."""
    with open_engine() as engine:
        if deep and not job:
            results = guard(lambda: engine.drill(sample, table=hypertable))  # recorded: status shows the last drill
        else:
            results = guard(lambda: engine.verify(job or None, table=hypertable, deep=deep, sample=sample))
    bad = [r for r in results if r.outcome == "failed"]
    offline = [r for r in results if r.outcome == "offline"]
    checked = len(results) - len(offline)
    if as_json:
        print_json({"checked": checked, "ok": checked - len(bad), "failed": len(bad), "offline": len(offline),
                     "offline_bytes": sum(r.bytes for r in offline), "results": [r.as_dict() for r in results]})
    else:
        typer.echo(f"verified {checked} archive(s): {checked - len(bad)} ok, {len(bad)} failed"
                   + (f"; {len(offline)} offline (Archive tier, {human_bytes(sum(r.bytes for r in offline))}), "
                      "not read" if offline else ""))
        for r in bad:
            typer.echo(f"  {f'job {r.job_id}' if r.job_id else 'table'} {r.chunk}: {r.detail}", err=True)
        for r in offline[:5]:
            typer.echo(f"  offline: job {r.job_id} {r.chunk}: {r.detail}")
    if bad:  # offline files are not damage: with every online file passing, the exit code is 0
        raise typer.Exit(1)


for command in (restore, rehydrate, lifecycle, query):  # the archive-reading commands, defined in cli_archive.py
    app.command()(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
