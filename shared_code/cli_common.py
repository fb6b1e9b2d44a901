"""What every `tsarchive` command shares: the engine it opens, error handling, JSON and table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import typer

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")


def console():
    from rich.console import Console

    # Piped output is not truncated to 80 columns.
    return Console(stderr=False, width=None if sys.stdout.isatty() else 200)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def open_engine(progress=None):
    from . import telemetry
    from .engine import Engine
    from .errors import ArchiverError
    from .settings import load_settings

    try:
        settings = load_settings()
        telemetry.configure()  # exports only when APPLICATIONINSIGHTS_CONNECTION_STRING is set
        return Engine(settings, progress=progress)
    except ArchiverError as error:
        fail(str(error))


def guard(action: Callable[[], Any]) -> Any:
    import psycopg

    from .errors import ArchiverError, render_error

    try:
        return action()
    except ArchiverError as error:
        fail(str(error))
    except psycopg.Error as error:
        fail(f"database error: {render_error(error)}")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return str(n)
