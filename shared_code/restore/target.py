"""The table a restore writes into: its name, whether restore made it, its columns checked, its creation."""

from __future__ import annotations

from psycopg import sql

from ..database import catalog
from ..database import connection as db
from ..errors import ArchiverError, RestoreRefused
from ..storage.manifest import Manifest
from ..typemap import quote_ident
from .context import RestoreContext
from .selection import Columns

RESTORE_SCHEMA = "archiver_restore"
COMMENT_PREFIX = "tsarchive restore"  # the table comment that marks a table restore created (and may replace)


def default_target(manifest: Manifest) -> tuple[str, str]:
    name = f"{manifest.table_name}__{manifest.chunk_name.lstrip('_')}"
    return RESTORE_SCHEMA, name[:63]


def split_target(target: str, option: str = "--target") -> tuple[str, str]:
    schema, dot, name = target.partition(".")
    if not dot or not schema or not name or len(schema) > 63 or len(name) > 63:
        raise ArchiverError(f"{option} {target!r}: expected schema.table")
    return schema, name


def create_table(ctx: RestoreContext, schema: str, name: str, columns: Columns, comment: str) -> None:
    definition = ", ".join(f"{quote_ident(c['name'])} {c['pg_type']}" for c in columns)
    db.ensure_schema(ctx.conn, schema)
    with ctx.conn.transaction():
        ctx.conn.execute(f"CREATE TABLE {db.relation_sql(schema, name)} ({definition})")
        ctx.conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(db.relation(schema, name), sql.Literal(comment)))


def made_by_restore(facts: catalog.TableFacts) -> bool:
    return facts.comment.startswith(COMMENT_PREFIX)


def check_existing(ctx: RestoreContext, schema: str, name: str, columns: Columns, *, chosen: bool) -> bool:
    """Whether the target exists; an existing one must have been chosen (--into) or made by restore, and must take
    every archived column with its archived type."""
    facts = catalog.describe_table(ctx.conn, schema, name)
    if facts is None:
        return False
    if not chosen and not made_by_restore(facts):
        raise RestoreRefused(f"{schema}.{name} exists and was not created by `tsarchive restore`; pass --into")
    have = {c.name: c.type_display for c in facts.columns}
    problems = [f"{c['name']} ({'missing' if c['name'] not in have else have[c['name']] + ', archived as ' + c['pg_type']})"
                for c in columns if have.get(c["name"]) != c["pg_type"]]
    if problems:
        raise RestoreRefused(f"{schema}.{name} cannot take the archived rows: column(s) {'; '.join(problems)}. "
                             "Restore into a new table (omit --into) and copy from there.")
    return True
