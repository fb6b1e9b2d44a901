"""The archive after a year in Azure storage: data files (and then the Delta log) moved to the offline Archive tier
with the Blob SDK on Azurite, which refuses reads of such blobs exactly as Azure does (409 BlobArchived). Every
command tells offline from damaged, restore refuses before writing, and `tsarchive rehydrate` brings them back."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from azure.storage.blob import BlobServiceClient

from .conftest import AZURITE_CONNECTION_STRING, TSARCHIVE, cli_env
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions, range_differences


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TSARCHIVE, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def archived(pg_dsn, azurite_container):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
        conn.execute("CREATE TABLE public.events_source AS SELECT * FROM public.events")  # the rows, kept to compare
    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/tsdb"
    env = cli_env(pg_dsn, lake_url, ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING,
                  ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_DELTA_CHECKPOINT_INTERVAL="1")
    ran = _cli(env, "run")
    assert ran.returncode == 0, ran.stderr
    jobs = ledger_jobs(pg_dsn)
    assert len(jobs) == len(due) >= 2
    container = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).get_container_client(azurite_container)
    low, high = min(j.range_start for j in jobs).isoformat(), max(j.range_end for j in jobs).isoformat()
    return {"env": env, "dsn": pg_dsn, "jobs": jobs, "container": container, "low": low, "high": high}


def _set_tier(container, predicate, tier: str) -> list[str]:
    names = [b.name for b in container.list_blobs() if not b.name.endswith("/") and predicate(b.name)]
    for name in names:
        container.get_blob_client(name).set_standard_blob_tier(tier)
    return names


def _is_data(name: str) -> bool:
    return name.endswith(".parquet") and "/_" not in name


@pytest.mark.scenario("Data files moved to the Archive tier: verify and the drill report them offline (exit 0), query "
                      "names the rehydrate command, restore --dry-run lists what to rehydrate, restore refuses before "
                      "writing; after tsarchive rehydrate the restore equals the source (EXCEPT ALL)")
def test_offline_data_files_are_told_apart_and_brought_back(archived):
    env, jobs, low, high = archived["env"], archived["jobs"], archived["low"], archived["high"]
    offline = _set_tier(archived["container"], _is_data, "Archive")
    assert len(offline) == len(jobs)
    status = json.loads(_cli(env, "status", "--json").stdout)
    tiers = next(r for r in status if r["table"] == "public.events")["bytes_by_tier"]
    assert tiers["Archive"] == sum(j.byte_count for j in jobs) and tiers["Hot"] > 0  # data offline, log online

    for args in (["verify", "--json"], ["verify", "--deep", "--json"]):
        result = _cli(env, *args)
        assert result.returncode == 0, (args, result.stderr)  # nothing damaged: offline is not a failure
        report = json.loads(result.stdout)
        assert (report["offline"], report["failed"]) == (len(jobs), 0) and report["offline_bytes"] > 0
        assert all("tsarchive rehydrate --hypertable public.events" in r["detail"]
                   for r in report["results"] if r["outcome"] == "offline")
    with psycopg.connect(archived["dsn"]) as conn:  # the drill (verify --deep) recorded what it skipped
        assert conn.execute("SELECT checked, failed, offline FROM archiver.drills ORDER BY id DESC LIMIT 1").fetchone() \
            == (0, 0, len(jobs))
    human = _cli(env, "verify")
    assert human.returncode == 0 and f"{len(jobs)} offline (Archive tier" in human.stdout

    query = _cli(env, "query", "SELECT count(*) AS n FROM public.events")
    assert query.returncode == 1 and "IO Error" not in query.stderr
    assert f"public.events: {len(jobs)} of {len(jobs)} data file(s)" in query.stderr
    assert "tsarchive rehydrate --hypertable public.events" in query.stderr

    dry = _cli(env, "restore", "--hypertable", "public.events", "--from", low, "--to", high, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["must_rehydrate"]["files"] == len(jobs) and all(c["status"] == "offline" for c in plan["chunks"])
    assert plan["must_rehydrate"]["command"].startswith("tsarchive rehydrate --hypertable public.events --from")

    refused = _cli(env, "restore", "--hypertable", "public.events", "--from", low, "--to", high,
                   "--into", "public.events_back")
    assert refused.returncode == 1 and "nothing was restored" in refused.stderr and "tsarchive rehydrate" in refused.stderr
    with psycopg.connect(archived["dsn"]) as conn:
        assert conn.execute("SELECT to_regclass('public.events_back')").fetchone()[0] is None  # nothing written

    first = _cli(env, "rehydrate", "--hypertable", "public.events", "--from", low, "--to", high, "--json")
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    assert started["requested"] == len(jobs) and started["ready"]  # Azurite rehydrates at once; Azure takes hours
    again = json.loads(_cli(env, "rehydrate", "--hypertable", "public.events", "--from", low, "--to", high,
                            "--json").stdout)
    assert again["requested"] == 0 and again["online"] == again["files"] == started["files"]  # idempotent

    restored = _cli(env, "restore", "--hypertable", "public.events", "--from", low, "--to", high,
                    "--into", "public.events_back")
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(archived["dsn"]) as conn:
        missing, extra = range_differences(conn, "public.events_source", "public.events_back", low, high)
        total = conn.execute("SELECT count(*) FROM public.events_back").fetchone()[0]
    assert (missing, extra) == (0, 0) and total == sum(j.row_count for j in jobs)
    assert json.loads(_cli(env, "query", "SELECT count(*) AS n FROM public.events", "--json").stdout)


def test_an_offline_delta_log_is_named_not_read_as_already_exists(archived):
    env = archived["env"]
    logs = _set_tier(archived["container"], lambda n: "/_delta_log/" in n, "Archive")
    assert any(n.endswith("_last_checkpoint") for n in logs)
    query = _cli(env, "query", "SELECT count(*) AS n FROM public.events")
    assert query.returncode == 1 and "already exists" not in query.stderr
    assert "Delta log is in the Archive tier" in query.stderr and "tsarchive rehydrate" in query.stderr
    verify = _cli(env, "verify", "--json")  # offline, not corrupt: exit 0, every archive counted offline
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["offline"] == len(archived["jobs"]) and report["failed"] == 0
    assert all("Delta log of public.events is in the Archive tier" in r["detail"] for r in report["results"])
    back = json.loads(_cli(env, "rehydrate", "--hypertable", "public.events", "--json").stdout)
    assert back["requested"] == len(logs) and back["ready"]
    answer = _cli(env, "query", "SELECT count(*) AS n FROM public.events", "--json")
    assert answer.returncode == 0, answer.stderr


def test_rehydrate_over_http(archived, monkeypatch):
    import azure.functions as func

    from .functions_support import load_app, user_function

    _set_tier(archived["container"], _is_data, "Archive")
    for key, value in archived["env"].items():
        if key.startswith("ARCHIVER_"):
            monkeypatch.setenv(key, value)
    functions = load_app(monkeypatch, "storagequeue")

    def post(body: dict) -> tuple[int, dict]:
        response = user_function(functions, "rehydrate_archive")(func.HttpRequest(
            "POST", "/api/archival/rehydrate", body=json.dumps(body).encode()))
        return response.status_code, json.loads(response.get_body())

    assert post({"hypertable": "public.events", "priority": "urgent"})[0] == 400
    assert post({"hypertable": "public.nope"})[0] == 404
    status, report = post({"hypertable": "public.events", "from": archived["low"], "to": archived["high"]})
    assert status == 200 and report["requested"] == len(archived["jobs"]) and report["ready"]
    status, again = post({"hypertable": "public.events"})
    assert status == 200 and again["requested"] == 0 and again["pending"] == 0
