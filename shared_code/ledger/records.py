"""The drills and restores tables: each request's record, from queued to done or failed."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


class DrillRecords:
    """Rows in `<schema>.drills`: recovery drills, run in place or queued for the archiver function."""

    conn: psycopg.Connection
    schema: str

    def record_drill(self, checked: int, problems: list[dict[str, Any]], offline: int = 0) -> None:
        """A recovery drill's outcome: archives checked, each failure (job id, chunk, what was wrong), and how many
        were skipped as offline."""
        self.conn.execute(sql.SQL("INSERT INTO {}.drills (checked, failed, problems, offline) VALUES (%s, %s, %s, %s)")
                          .format(sql.Identifier(self.schema)), (checked, len(problems), json.dumps(problems), offline))

    def open_drill(self, sample: int, table: str | None, requested_by: str) -> int:
        """Record a drill asked for over HTTP, queued for the archiver function; its id."""
        row = self.conn.execute(sql.SQL(
            "INSERT INTO {}.drills (state, sample, table_name, requested_by) VALUES ('queued', %s, %s, %s) RETURNING id"
        ).format(sql.Identifier(self.schema)), (sample, table, requested_by)).fetchone()
        assert row is not None
        return int(row[0])

    def start_drill(self, drill_id: int) -> str | None:
        """queued (or running, redelivered after its worker died) -> running; the state it left, None if finished."""
        row = self.conn.execute(sql.SQL(
            "UPDATE {0}.drills d SET state = 'running', ran_at = now() FROM {0}.drills old "
            "WHERE d.id = %s AND old.id = d.id AND d.state IN ('queued', 'running') RETURNING old.state").format(
            sql.Identifier(self.schema)), (drill_id,)).fetchone()
        return str(row[0]) if row else None

    def finish_drill(self, drill_id: int, checked: int, problems: list[dict[str, Any]], offline: int = 0) -> None:
        self.conn.execute(sql.SQL(
            "UPDATE {}.drills SET state = 'done', checked = %s, failed = %s, problems = %s, offline = %s, error = NULL, "
            "ran_at = now() WHERE id = %s").format(sql.Identifier(self.schema)),
            (checked, len(problems), json.dumps(problems), offline, drill_id))

    def fail_drill(self, drill_id: int, message: str) -> None:
        self.conn.execute(sql.SQL("UPDATE {}.drills SET state = 'failed', error = %s WHERE id = %s").format(
            sql.Identifier(self.schema)), (message, drill_id))

    def drill_record(self, drill_id: int) -> dict[str, Any] | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(sql.SQL("SELECT * FROM {}.drills WHERE id = %s").format(sql.Identifier(self.schema)),
                              (drill_id,)).fetchone()
        return None if row is None else {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}

    def last_drill(self) -> dict[str, Any] | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(sql.SQL("SELECT ran_at, checked, failed, problems, offline FROM {}.drills "
                                      "WHERE state = 'done' ORDER BY id DESC LIMIT 1")
                              .format(sql.Identifier(self.schema))).fetchone()
        if row is None:
            return None
        return {"ran_at": row["ran_at"].isoformat(), "checked": row["checked"], "failed": row["failed"],
                "problems": row["problems"], "offline": row["offline"]}


class RestoreRecords:
    """Rows in `<schema>.restores`: restores, run by the CLI or queued for the archiver function."""

    conn: psycopg.Connection
    schema: str

    def open_restore(self, source_table: str, range_from: str | None, range_to: str | None, target: str | None,
                     options: dict[str, Any], requested_by: str, *, queued: bool) -> int:
        """Record a restore request ('queued' for the archiver, else 'running' in this process); its id."""
        row = self.conn.execute(sql.SQL(
            "INSERT INTO {}.restores (source_table, range_from, range_to, target, options, state, requested_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id").format(sql.Identifier(self.schema)),
            (source_table, range_from, range_to, target, json.dumps(options), "queued" if queued else "running",
             requested_by)).fetchone()
        assert row is not None
        return int(row[0])

    def start_restore(self, restore_id: int) -> str | None:
        """queued (or running, when the broker redelivers after its worker died) -> running; the state it left.

        None when the restore already finished: a duplicate delivery has nothing to do.
        """
        row = self.conn.execute(sql.SQL(
            "UPDATE {0}.restores r SET state = 'running', updated_at = now() FROM {0}.restores old "
            "WHERE r.id = %s AND old.id = r.id AND r.state IN ('queued', 'running') RETURNING old.state").format(
            sql.Identifier(self.schema)), (restore_id,)).fetchone()
        return str(row[0]) if row else None

    def finish_restore(self, restore_id: int, rows: int, result: dict[str, Any]) -> None:
        self.conn.execute(sql.SQL(
            "UPDATE {}.restores SET state = 'done', rows = %s, result = %s, target = coalesce(%s, target), "
            "error = NULL, updated_at = now() WHERE id = %s").format(sql.Identifier(self.schema)),
            (rows, json.dumps(result, default=str), result.get("target"), restore_id))

    def fail_restore(self, restore_id: int, message: str) -> None:
        self.conn.execute(sql.SQL(
            "UPDATE {}.restores SET state = 'failed', error = %s, updated_at = now() WHERE id = %s").format(
            sql.Identifier(self.schema)), (message, restore_id))

    def restore_record(self, restore_id: int) -> dict[str, Any] | None:
        records = self.restore_records(restore_id=restore_id)
        return records[0] if records else None

    def restore_records(self, *, restore_id: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Restores, newest first, as JSON-ready dicts."""
        where = sql.SQL("WHERE id = %s") if restore_id is not None else sql.SQL("")
        params = (restore_id, limit) if restore_id is not None else (limit,)
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(sql.SQL("SELECT * FROM {}.restores {} ORDER BY id DESC LIMIT %s").format(
                sql.Identifier(self.schema), where), params).fetchall()
        return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in rows]

    def restore_counts(self) -> dict[str, int]:
        rows = self.conn.execute(sql.SQL("SELECT state, count(*) FROM {}.restores GROUP BY state").format(
            sql.Identifier(self.schema))).fetchall()
        return {str(state): int(count) for state, count in rows}
