"""The `tsarchive` CLI as a user runs it: exit codes, JSON output, readable errors, no tracebacks."""

import json
import subprocess

import psycopg

from .conftest import TSARCHIVE, cli_env
from .helpers import due_partitions, make_monthly_partitions


def run(args, env):
    return subprocess.run([TSARCHIVE, *args], env=env, capture_output=True, text=True, timeout=300)


def test_bad_settings_one_message_exit_1(tmp_path):
    env = cli_env("postgresql://u:secret@127.0.0.1:1/db", tmp_path, ARCHIVER_RETENTION_DAYS="-5",
                  ARCHIVER_LAKE_URL="ftp://x", ARCHIVER_ZSTD_LEVEL="99")
    result = run(["status"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Invalid configuration:")
    for name in ("ARCHIVER_RETENTION_DAYS", "ARCHIVER_LAKE_URL", "ARCHIVER_ZSTD_LEVEL"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_unreachable_database_is_readable(tmp_path):
    result = run(["plan"], cli_env("postgresql://u:secret@127.0.0.1:1/db", tmp_path))
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr and "ARCHIVER_DATABASE_URL" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_unknown_partitioned_table_is_readable(pg_dsn, tmp_path):
    result = run(["plan"], cli_env(pg_dsn, tmp_path, ARCHIVER_PARTITIONED_TABLES="public.nope"))
    assert result.returncode == 1 and "public.nope" in result.stderr and "Traceback" not in result.stderr


def test_full_cycle_json(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
    env = cli_env(pg_dsn, tmp_path / "lake", ARCHIVER_PARTITIONED_TABLES="public.events")
    init = run(["init", "--json"], env)
    assert init.returncode == 0 and json.loads(init.stdout)["version"] >= 1
    assert run(["init"], env).returncode == 0  # idempotent

    plan = json.loads(run(["plan", "--json"], env).stdout)
    assert sorted(p["chunk"].split(".")[1] for p in plan if p["decision"] == "due") == due
    assert any(p["decision"] == "skipped" and "DEFAULT" in p["reason"] for p in plan)

    dry = json.loads(run(["run", "--dry-run", "--json"], env).stdout)
    assert dry["dry_run"] is True and dry["steps"] == []

    result = run(["run", "--json"], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and report["rows"] == 50 * len(due)

    status = json.loads(run(["status", "--json"], env).stdout)
    row = next(r for r in status if r["table"] == "public.events")
    assert row["dropped"] == len(due) and row["due"] == 0 and row["bytes_archived"] > 0

    jobs = json.loads(run(["jobs", "--json", "--state", "dropped"], env).stdout)
    assert len(jobs) == len(due)
    assert run(["jobs", "--state", "bogus"], env).returncode == 1

    verify = run(["verify", "--json"], env)
    report = json.loads(verify.stdout)
    assert verify.returncode == 0 and all(r["outcome"] == "done" for r in report["results"])
    assert (report["failed"], report["offline"]) == (0, 0) and report["checked"] == len(report["results"])
    drill = run(["verify", "--deep", "--sample", "1", "--json"], env)
    assert drill.returncode == 0 and len([r for r in json.loads(drill.stdout)["results"] if r["job_id"]]) == 1
    human = run(["status"], env)
    assert human.returncode == 0 and "public.events" in human.stdout


def test_help_is_fast_and_does_not_import_heavy_modules():
    probe = subprocess.run(
        [TSARCHIVE.replace("tsarchive", "python"), "-X", "importtime", "-c", "import shared_code.cli"],
        capture_output=True, text=True)
    imported = probe.stderr
    assert "pyarrow" not in imported and "adbc_driver" not in imported
    assert run(["--help"], {}).returncode == 0


def test_hypertable_matching_nothing_is_an_error_and_runs_off_a_terminal_print_a_line_per_chunk(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
    env = cli_env(pg_dsn, tmp_path / "lake", ARCHIVER_PARTITIONED_TABLES="public.events")
    for command in (["run", "--hypertable", "public.nope"], ["plan", "--hypertable", "nope"]):
        missing = run(command, env)
        assert missing.returncode == 1 and "no archivable table matches" in missing.stderr, missing.stderr
        assert "archivable tables: public.events" in missing.stderr and "Traceback" not in missing.stderr
    result = run(["run", "--hypertable", "events"], env)  # piped: no terminal, so one line per chunk and step
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(("archived ", "dropped "))]
    assert len(lines) == 2 * len(due)
    archived = next(line for line in lines if line.startswith("archived "))
    assert "table=public.events chunk=" in archived and "rows=50 " in archived and "seconds=" in archived


def test_retry_gives_a_terminal_job_another_go_after_the_cause_is_fixed(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE geo (ts timestamptz NOT NULL, spot point) PARTITION BY RANGE (ts)")
        conn.execute("CREATE TABLE geo_old PARTITION OF geo FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
        conn.execute("INSERT INTO geo VALUES ('2020-01-05', point(1,2))")
    env = cli_env(pg_dsn, tmp_path / "lake", ARCHIVER_PARTITIONED_TABLES="public.geo")
    assert run(["run"], env).returncode == 1
    (job,) = json.loads(run(["jobs", "--state", "failed", "--json"], env).stdout)
    assert job["terminal"] is True and "point" in job["last_error"]
    assert run(["retry", str(job["id"])], env).returncode == 1  # the cause is still there
    fixed = run(["retry", str(job["id"]), "--json"], {**env, "ARCHIVER_UNSUPPORTED_AS_TEXT": "true"})
    assert fixed.returncode == 0, fixed.stderr
    assert [r["outcome"] for r in json.loads(fixed.stdout)] == ["done", "done"]
    missing = run(["retry", "999"], env)
    assert missing.returncode == 1 and "job 999" in missing.stderr
