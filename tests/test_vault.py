"""WORM at the storage boundary: the vault (immutable final copies, ARCHIVER_VAULT_URL) in a container behind a
proxy that enforces a container-level WORM policy on Azurite with Azure's own 409 BlobImmutableDueToPolicy.

The archive and its re-archive after a late change never need a refused call; the Delta table stays exact; the vault
keeps every version, and its manifests say which one is current. A WORM policy on the live table itself fails the
archive at once with a message saying what to do, and nothing is dropped."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import uuid

import psycopg
import pyarrow.parquet as pq
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from shared_code.errors import ConfigError
from shared_code.settings import load_settings
from shared_code.storage.lake import Lake
from shared_code.storage.vault import Vault, data_path

from .conftest import AZURITE_BLOB_PORT, AZURITE_CONNECTION_STRING, TSARCHIVE, cli_env
from .helpers import WormProxy, due_partitions, ledger_jobs, make_monthly_partitions, range_differences


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TSARCHIVE, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def vault_container(azurite_container):
    service = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING)
    name = f"vault{uuid.uuid4().hex[:10]}"
    service.create_container(name)
    proxy = WormProxy(AZURITE_BLOB_PORT, {name})
    yield {"name": name, "proxy": proxy, "direct": service.get_container_client(name), "lake": azurite_container}
    proxy.close()
    service.delete_container(name)


def _source(pg_dsn: str) -> list[str]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        return due_partitions(conn, "public.events")


def _vault_blobs(direct) -> dict[str, bytes]:
    return {b.name: direct.get_blob_client(b.name).download_blob().readall()
            for b in direct.list_blobs() if not b.name.endswith("/")}


def blobs_names(direct) -> list[str]:
    return [b.name for b in direct.list_blobs()]


def test_the_stand_in_refuses_what_azure_refuses(vault_container):
    """The boundary itself: create and tier changes pass; overwrite and delete get Azure's 409."""
    proxied = BlobServiceClient.from_connection_string(vault_container["proxy"].connection_string())
    blob = proxied.get_blob_client(vault_container["name"], "tsdb/x.bin")
    blob.upload_blob(b"first", overwrite=False)
    blob.set_standard_blob_tier("Cool")  # allowed under WORM (immutable-storage-overview, Access tiers)
    for attempt in (lambda: blob.upload_blob(b"second", overwrite=True), blob.delete_blob):
        with pytest.raises(HttpResponseError) as refused:
            attempt()
        assert refused.value.status_code == 409 and refused.value.error_code == "BlobImmutableDueToPolicy"
    assert blob.download_blob().readall() == b"first"
    assert [op for op, _ in vault_container["proxy"].refused] == ["put blob", "delete"]


@pytest.mark.scenario("WORM vault: archive seals create-only copies and manifests (no refused call); a late change "
                      "re-archives with new copies beside the old; the drop completes; the Delta table equals the source "
                      "(EXCEPT ALL); the vault's current manifests name exactly the ledger's files")
def test_vault_under_worm_through_a_late_change_and_the_drop(pg_dsn, vault_container):
    due = _source(pg_dsn)
    proxy, direct = vault_container["proxy"], vault_container["direct"]
    env = cli_env(pg_dsn, f"abfss://{vault_container['lake']}@devstoreaccount1.dfs.core.windows.net/tsdb",
                  ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING,
                  ARCHIVER_VAULT_URL=f"abfss://{vault_container['name']}@devstoreaccount1.dfs.core.windows.net/tsdb",
                  ARCHIVER_VAULT_CONNECTION_STRING=proxy.connection_string(),
                  ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_DELTA_CHECKPOINT_INTERVAL="1")
    archived = _cli(env, "run", "--no-drop")
    assert archived.returncode == 0, archived.stderr
    jobs = ledger_jobs(pg_dsn)
    assert len(jobs) == len(due) >= 2 and all(j.state == "archived" and j.vault_manifest for j in jobs)
    blobs = _vault_blobs(direct)
    for job in jobs:
        for path in job.lake_paths:
            assert hashlib.sha256(blobs[f"tsdb/{data_path(path)}"]).hexdigest() == job.checksums[path]
    assert proxy.refused == []

    changed = jobs[0]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a late correction inside an archived chunk
        conn.execute("UPDATE public.events SET value = -1 WHERE ts >= %s AND ts < %s AND device = 1",
                     (changed.range_start, changed.range_end))
        conn.execute("CREATE TABLE public.events_source AS SELECT * FROM public.events")
    dropped = _cli(env, "run")
    assert dropped.returncode == 0, dropped.stderr
    after = {j.id: j for j in ledger_jobs(pg_dsn)}
    assert all(j.state == "dropped" for j in after.values())
    assert proxy.refused == []  # the re-archive wrote new copies; it never tried to replace or delete one
    live = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).get_container_client(vault_container["lake"])
    log = [b.name for b in live.list_blobs(name_starts_with="tsdb/public.events/_delta_log/")]
    assert "tsdb/public.events/_delta_log/_last_checkpoint" in log  # rewritten at every commit, in the live table
    assert any(n.endswith(".checkpoint.parquet") for n in log)
    assert not [n for n in blobs_names(direct) if "_delta_log" in n]  # the vault holds no Delta log to rewrite

    now = after[changed.id]
    assert now.vault_manifest != changed.vault_manifest and set(now.lake_paths).isdisjoint(changed.lake_paths)
    blobs = _vault_blobs(direct)
    assert f"tsdb/{changed.vault_manifest}" in blobs  # the first seal is still there, immutable
    assert all(f"tsdb/{data_path(p)}" in blobs for p in changed.lake_paths)
    current = json.loads(blobs[f"tsdb/{now.vault_manifest}"])
    assert current["supersedes"] == [changed.vault_manifest] and current["rows"] == now.row_count

    # What a plain-Parquet reader sees: every version. Through the manifests (the newest of each chunk), exactly
    # the ledger's files, which hold the source's rows.
    manifests = {name.removeprefix("tsdb/"): json.loads(body) for name, body in blobs.items() if "/manifests/" in name}
    superseded = {p for m in manifests.values() for p in m["supersedes"]}
    newest = [m for path, m in manifests.items() if path not in superseded]
    assert {f["live_path"]: f["sha256"] for m in newest for f in m["files"]} == \
        {p: sha for j in after.values() for p, sha in j.checksums.items()}
    everything = sum(pq.read_metadata(io.BytesIO(body)).num_rows for name, body in blobs.items()
                     if name.endswith(".parquet"))
    assert everything == sum(j.row_count for j in after.values()) + changed.row_count

    low = min(j.range_start for j in after.values()).isoformat()
    high = max(j.range_end for j in after.values()).isoformat()
    restored = _cli(env, "restore", "--hypertable", "public.events", "--from", low, "--to", high,
                    "--into", "public.events_back")
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(pg_dsn) as conn:
        missing, extra = range_differences(conn, "public.events_source", "public.events_back", low, high)
        corrected = conn.execute("SELECT count(*) FROM public.events_back WHERE value = -1").fetchone()[0]
    assert (missing, extra) == (0, 0) and corrected > 0

    deep = _cli(env, "verify", "--deep", "--json")
    assert deep.returncode == 0, deep.stderr
    assert json.loads(deep.stdout)["ok"] == len(after)
    # Once the retention ends a vault copy can go; verify names it (deleted here past the proxy, as its owner could).
    lost = sorted(now.lake_paths)[0]
    direct.get_blob_client(f"tsdb/{data_path(lost)}").delete_blob()
    broken = _cli(env, "verify", "--deep", "--json")
    assert broken.returncode == 1
    assert any(f"vault {data_path(lost)}: missing" in r["detail"] for r in json.loads(broken.stdout)["results"])


def test_a_crash_after_sealing_converges_with_a_superseding_seal(pg_dsn, vault_container):
    _source(pg_dsn)
    proxy = vault_container["proxy"]
    env = cli_env(pg_dsn, f"abfss://{vault_container['lake']}@devstoreaccount1.dfs.core.windows.net/tsdb",
                  ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING,
                  ARCHIVER_VAULT_URL=f"abfss://{vault_container['name']}@devstoreaccount1.dfs.core.windows.net/tsdb",
                  ARCHIVER_VAULT_CONNECTION_STRING=proxy.connection_string(),
                  ARCHIVER_PARTITIONED_TABLES="public.events", ARCHIVER_PARALLEL_CHUNKS="1")
    crashed = _cli({**env, "TSARCHIVE_CRASH_AT": "after_seal"}, "run", "--no-drop")
    assert crashed.returncode == 137
    first = _vault_blobs(vault_container["direct"])
    assert sum("/manifests/" in n for n in first) == 1  # sealed, then the process died before the ledger knew
    finished = _cli(env, "run")
    assert finished.returncode == 0, finished.stderr
    jobs = ledger_jobs(pg_dsn)
    assert all(j.state == "dropped" and j.vault_manifest for j in jobs)
    blobs = _vault_blobs(vault_container["direct"])
    retried = next(j for j in jobs if json.loads(blobs[f"tsdb/{j.vault_manifest}"])["supersedes"])
    assert json.loads(blobs[f"tsdb/{retried.vault_manifest}"])["supersedes"] == \
        [n.removeprefix("tsdb/") for n in first if "/manifests/" in n]
    assert proxy.refused == []


@pytest.mark.scenario("WORM on the live Delta table itself: the archive fails at once (terminal) with a message naming "
                      "the immutability policy and ARCHIVER_VAULT_URL; no chunk is dropped, no row lost")
def test_worm_on_the_live_table_fails_clearly_and_drops_nothing(pg_dsn, azurite_container):
    due = _source(pg_dsn)
    proxy = WormProxy(AZURITE_BLOB_PORT, {azurite_container})
    try:
        env = cli_env(pg_dsn, f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/tsdb",
                      ARCHIVER_LAKE_CONNECTION_STRING=proxy.connection_string(),
                      ARCHIVER_PARTITIONED_TABLES="public.events")
        with psycopg.connect(pg_dsn) as conn:
            before = conn.execute("SELECT count(*) FROM public.events").fetchone()[0]
        ran = _cli(env, "run")
    finally:
        proxy.close()
    assert ran.returncode == 1
    assert "immutability (WORM) policy" in ran.stdout + ran.stderr and "ARCHIVER_VAULT_URL" in ran.stdout + ran.stderr
    assert proxy.refused  # the policy was really hit
    jobs = ledger_jobs(pg_dsn)
    assert len(jobs) == len(due) and all(j.state == "failed" and j.terminal for j in jobs)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.events").fetchone()[0] == before
        assert all(conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] for name in due)


def test_local_vault_is_create_only(tmp_path):
    lake = Lake((tmp_path / "lake").as_uri())
    vault = Lake((tmp_path / "vault").as_uri())
    lake.write_bytes("t/a.parquet", b"abc")
    assert vault.create_only("data/t/a.parquet", io.BytesIO(b"abc"), 3) is True
    assert vault.create_only("data/t/a.parquet", io.BytesIO(b"xyz"), 3) is False
    assert vault.read_bytes("data/t/a.parquet") == b"abc"
    assert [p.name for p in (tmp_path / "vault" / "data" / "t").iterdir()] == ["a.parquet"]  # no temporary left
    sealed = Vault(vault)
    vault.write_bytes(data_path("t/b.parquet"), b"other")  # a copy already there with different content
    lake.write_bytes("t/b.parquet", b"mine!")
    from shared_code.errors import VerificationError
    from shared_code.storage.layout import ChunkLayout
    from shared_code.storage.manifest import FileEntry

    with pytest.raises(VerificationError, match="cannot be replaced"):
        sealed.seal(lake, [FileEntry("t/b.parquet", 1, 5, hashlib.sha256(b"mine!").hexdigest(), 1)],
                    ChunkLayout("t", "x"), 1, "abcd1234", {})


def test_the_vault_must_not_be_the_live_lake():
    with pytest.raises(ConfigError, match="ARCHIVER_VAULT_URL must name another"):
        load_settings(database_url="postgresql://x", lake_url="file:///tmp/lake", vault_url="file:///tmp/lake/")
    assert load_settings(database_url="postgresql://x", vault_url="").vault_url is None
