"""Each table's retention policy, read from the settings and the catalog: its cutoff, skip reason and the continuous
aggregates that guard its raw data. The planner classifies every chunk with it; the drop re-reads one job's."""

from __future__ import annotations

import logging
from datetime import datetime

import psycopg

from .database import catalog
from .database.catalog import Hypertable, PartitionedTable
from .errors import ArchiverError, render_error
from .ledger.jobs import Job
from .planning import Chunk, ChunkKind, TablePolicy, cutoff_for, table_selected
from .settings import Settings

log = logging.getLogger("tsarchive")

_INTEGER_TYPES = ("smallint", "integer", "bigint")


def hypertable_policy(conn: psycopg.Connection, settings: Settings, table: Hypertable, now: datetime,
                      older_than: datetime | None = None) -> TablePolicy:
    """A hypertable's cutoff (by time, or by its integer_now function), and its continuous-aggregate guards."""
    name = f"{table.schema}.{table.name}"
    skip, cutoff = None, None
    if table.time_type in _INTEGER_TYPES:
        span = settings.integer_retention.get(name, settings.integer_retention.get(table.name))
        if span is None:
            skip = f"integer time column ({table.time_type}): set ARCHIVER_INTEGER_RETENTION '{name}=<units>' to archive it"
        elif not table.integer_now_func:
            skip = f"integer time column without an integer_now function: call set_integer_now_func on {name}"
        else:
            cutoff = catalog.integer_now(conn, table.integer_now_func) - span
    else:
        cutoff = older_than or cutoff_for(name, now, settings.retention_days, settings.retention_overrides)
    try:
        guards = catalog.aggregate_guards(conn, table, now)
    except psycopg.errors.InsufficientPrivilege as denied:  # this table only: the others go on
        guards, skip = [], f"cannot read its continuous aggregates: {render_error(denied)}"
        log.error("%s skipped: %s", name, skip)
    return TablePolicy(cutoff=cutoff, skip_reason=skip, guards=guards)


def partition_policy(settings: Settings, table: PartitionedTable, now: datetime,
                     older_than: datetime | None = None) -> TablePolicy:
    """A native range-partitioned table's cutoff; integer keys have no 'now' to count back from."""
    if table.key_type in _INTEGER_TYPES:
        return TablePolicy(cutoff=None, skip_reason="integer partition keys have no integer_now reference; not "
                                                    "supported for native partitions")
    name = f"{table.schema}.{table.name}"
    return TablePolicy(cutoff=older_than or cutoff_for(name, now, settings.retention_days, settings.retention_overrides))


def _matches(wanted: str | None, schema: str, name: str) -> bool:
    return wanted is None or wanted in (f"{schema}.{name}", name)


def read_policies(conn: psycopg.Connection, settings: Settings, now: datetime, hypertable: str | None = None,
                  older_than: datetime | None = None) -> tuple[list[Chunk], dict[str, TablePolicy]]:
    """Every chunk of every selected table (or of `hypertable`), and each table's policy."""
    chunks: list[Chunk] = []
    policies: dict[str, TablePolicy] = {}
    candidates: list[str] = []  # every archivable table, to name them when `hypertable` matches none
    if catalog.has_timescaledb(conn):
        for table in catalog.user_hypertables(conn):
            name = f"{table.schema}.{table.name}"
            if not table_selected(name, settings.include, settings.exclude):
                continue
            candidates.append(name)
            if _matches(hypertable, table.schema, table.name):
                policies[name] = hypertable_policy(conn, settings, table, now, older_than)
                chunks.extend(catalog.hypertable_chunks(conn, table))
    for qualified in settings.partitioned_tables:
        table = catalog.partitioned_table(conn, qualified)
        name = f"{table.schema}.{table.name}"
        candidates.append(name)
        if _matches(hypertable, table.schema, table.name):
            policies[name] = partition_policy(settings, table, now, older_than)
            chunks.extend(catalog.partition_chunks(conn, table))
    if hypertable and not policies:
        known = sorted(candidates) or ["none (check ARCHIVER_INCLUDE and ARCHIVER_PARTITIONED_TABLES)"]
        raise ArchiverError(f"no archivable table matches {hypertable!r}; archivable tables: {', '.join(known)}")
    return chunks, policies


def job_policy(conn: psycopg.Connection, settings: Settings, job: Job, now: datetime) -> TablePolicy | None:
    """The policy of one job's table as it stands now, or None when the table is no longer selected or configured."""
    if job.kind == ChunkKind.PARTITION:
        for qualified in settings.partitioned_tables:
            table = catalog.partitioned_table(conn, qualified)
            if (table.schema, table.name) == (job.table_schema, job.table_name):
                return partition_policy(settings, table, now)
        return None
    if not table_selected(job.table, settings.include, settings.exclude) or not catalog.has_timescaledb(conn):
        return None
    table = catalog.hypertable(conn, job.table_schema, job.table_name)
    return None if table is None else hypertable_policy(conn, settings, table, now)
