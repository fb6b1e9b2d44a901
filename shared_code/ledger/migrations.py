"""The ledger's schema: versioned migrations, applied under a lock, safe to run concurrently and repeatedly."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..database import connection as db

MIGRATIONS: list[str] = [
    # 1: jobs table
    """
    CREATE TABLE IF NOT EXISTS {schema}.jobs (
        id               bigserial PRIMARY KEY,
        kind             text NOT NULL,
        table_schema     text NOT NULL,
        table_name       text NOT NULL,
        chunk_schema     text NOT NULL,
        chunk_name       text NOT NULL,
        range_start      timestamptz,
        range_end        timestamptz,
        range_start_int  bigint,
        range_end_int    bigint,
        is_compressed    boolean NOT NULL DEFAULT false,
        state            text NOT NULL CHECK (state IN
                           ('planned','archiving','archived','dropped','failed','blocked')),
        reason           text,
        attempts         integer NOT NULL DEFAULT 0,
        last_error       text,
        lake_paths       jsonb NOT NULL DEFAULT '[]'::jsonb,
        manifest_path    text,
        row_count        bigint,
        byte_count       bigint,
        checksums        jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        content_hash     text,
        schema_fingerprint text,
        claimed_by_pid   integer,
        claimed_at       timestamptz,
        next_attempt_at  timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        archived_at      timestamptz,
        dropped_at       timestamptz
    );
    CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_chunk ON {schema}.jobs (chunk_schema, chunk_name)
        WHERE state <> 'dropped';
    CREATE INDEX IF NOT EXISTS jobs_table_state ON {schema}.jobs (table_schema, table_name, state);
    """,
    # 2: queue bookkeeping for the function app
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS enqueued_at timestamptz;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS enqueue_count integer NOT NULL DEFAULT 0;
    """,
    # 3: the Delta table and commit version holding each job's files
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS table_path text;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS delta_version bigint;
    """,
    # 4: the snapshot (pg_snapshot text) each archive was read in: the drop's change check compares rows against it
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS archive_snapshot text;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS chunk_oid bigint;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS columns jsonb;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS manifest_sha256 text;
    """,
    # 5: recovery drills (verify --deep): what was checked, what failed
    """
    CREATE TABLE IF NOT EXISTS {schema}.drills (
        id          bigserial PRIMARY KEY,
        ran_at      timestamptz NOT NULL DEFAULT now(),
        checked     integer NOT NULL,
        failed      integer NOT NULL,
        problems    jsonb NOT NULL DEFAULT '[]'::jsonb
    );
    """,
    # 6: restores (CLI and queued HTTP): what was asked, where it went, its proof per chunk; an audit trail
    """
    CREATE TABLE IF NOT EXISTS {schema}.restores (
        id           bigserial PRIMARY KEY,
        source_table text NOT NULL,
        range_from   text,
        range_to     text,
        target       text,
        options      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        state        text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        requested_by text NOT NULL,
        rows         bigint,
        result       jsonb,
        error        text,
        created_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 7: a failure no retry can fix (unsupported type, missing privilege): not retried until an operator retries it
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS terminal boolean NOT NULL DEFAULT false;
    """,
    # 8: drills queued over HTTP (run by the archiver function): asked for, running, done or failed
    """
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'done'
        CHECK (state IN ('queued', 'running', 'done', 'failed'));
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS sample integer;
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS table_name text;
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS requested_by text;
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS error text;
    ALTER TABLE {schema}.drills ALTER COLUMN checked SET DEFAULT 0, ALTER COLUMN failed SET DEFAULT 0;
    """,
    # 9: archives a drill skipped because their files were in the Archive tier (offline, not damaged)
    """
    ALTER TABLE {schema}.drills ADD COLUMN IF NOT EXISTS offline integer NOT NULL DEFAULT 0;
    """,
    # 10: the immutable copy of an archive (ARCHIVER_VAULT_URL): its manifest and that manifest's SHA-256
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS vault_manifest text;
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS vault_manifest_sha256 text;
    """,
    # 11: each file's parts (head, row groups, footer) with their SHA-256: a restore checks only what it reads
    """
    ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS file_parts jsonb NOT NULL DEFAULT '{{}}'::jsonb;
    """,
]


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Apply pending migrations under a lock; the number of migrations the code knows."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tsarchive-migrate:{schema}",))
        db.ensure_schema(conn, schema)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        row = conn.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(ident)).fetchone()
        current = int(row[0]) if row else 0
        for version, body in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            conn.execute(sql.SQL(body.replace("{schema}", "{0}")).format(ident))  # type: ignore[arg-type]
            conn.execute(sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(ident), (version,))
    return len(MIGRATIONS)


def applied_version(conn: psycopg.Connection, schema: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return int(row[0]) if row else 0
