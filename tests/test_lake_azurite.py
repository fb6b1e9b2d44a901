"""The lake writer against Azurite's Blob endpoint (the path ADLS Gen2 uses in Azure, minus the DFS rename)."""

import io
import json
import subprocess

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable

from shared_code.ledger import JobState
from shared_code.storage.lake import Lake

from .conftest import AZURITE_CONNECTION_STRING, TSARCHIVE, cli_env, engine_for
from .helpers import due_partitions, ledger_jobs, make_monthly_partitions, normalise, rows_of


def test_archive_to_azurite(pg_dsn, azurite_container):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
        expected = {name: rows_of(conn, f"public.{name}") for name in due}
    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/tsdb/prod"
    with engine_for(pg_dsn, lake_url, lake_connection_string=AZURITE_CONNECTION_STRING,
                    partitioned_tables=["public.events"]) as engine:
        assert not engine.run().failed
        assert all(r.outcome == "done" for r in engine.verify())
    container = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).get_container_client(azurite_container)
    names = [b.name for b in container.list_blobs()]
    data = [n for n in names if n.endswith(".parquet") and "/_" not in n]
    assert len(data) == len(due)  # monthly partitions: one file each, in the month's own folder
    assert all(n.startswith("tsdb/prod/public.events/year=") for n in data)
    assert any(n.startswith("tsdb/prod/public.events/_delta_log/00000000000000000000.json") for n in names)
    # staging blobs were removed after publishing (pyarrow may leave an empty folder marker)
    assert not [n for n in names if "/staging/" in n and not n.endswith("/")]
    manifests = [n for n in names if n.endswith(".json") and "/_tsarchive/manifests/" in n]
    assert len(manifests) == len(due)
    table = DeltaTable(f"az://{azurite_container}/tsdb/prod/public.events", storage_options=engine.lake.delta_storage_options())
    assert table.protocol().min_reader_version == 1 and table.protocol().min_writer_version == 2
    paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    assert sorted(f"tsdb/prod/public.events/{p}" for p in paths) == sorted(data)
    every = sorted(tuple(normalise(v) for v in r) for rows in expected.values() for r in rows)
    through_delta = table.to_pyarrow_table().drop_columns(["year", "month"]).to_pylist()
    assert sorted(tuple(normalise(v) for v in r.values()) for r in through_delta) == every
    for job in ledger_jobs(pg_dsn):
        assert job.state == JobState.DROPPED and job.table_path == "public.events"
        blob = container.download_blob(f"tsdb/prod/{job.lake_paths[0]}").readall()
        archived = sorted(tuple(normalise(v) for v in r.values()) for r in pq.read_table(io.BytesIO(blob)).to_pylist())
        assert archived == sorted(tuple(normalise(v) for v in r) for r in expected[job.chunk_name])
        manifest = json.loads(container.download_blob(f"tsdb/prod/{job.manifest_path}").readall())
        assert manifest["files"][0]["sha256"] == job.checksums[job.lake_paths[0]]
        assert manifest["delta_version"] == job.delta_version


def test_query_command_on_azurite(pg_dsn, azurite_container):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
        rows = sum(len(rows_of(conn, f"public.{name}")) for name in due)
    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/q"
    with engine_for(pg_dsn, lake_url, lake_connection_string=AZURITE_CONNECTION_STRING,
                    partitioned_tables=["public.events"]) as engine:
        assert not engine.run().failed
    env = cli_env(pg_dsn, lake_url, ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING)
    out = subprocess.run([TSARCHIVE, "query", "SELECT count(*) AS n FROM public.events", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": rows}]


def test_publish_on_flat_namespace_copies_then_deletes(azurite_container):
    lake = Lake(f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/p", AZURITE_CONNECTION_STRING)
    with lake.open_write("t/_tmp/x") as sink:
        sink.write(b"hello")
    assert sink.digest.hexdigest().startswith("2cf24dba")
    lake.move("t/_tmp/x", "t/final")
    assert lake.read_bytes("t/final") == b"hello"
    assert not lake.exists("t/_tmp/x")
    assert lake.list_files("t") == ["t/final"]
    assert lake.list_files("missing") == []


def test_unreachable_lake_gives_clear_error():
    from shared_code.errors import LakeError

    bad = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    lake = Lake("abfss://c@devstoreaccount1.dfs.core.windows.net/p", bad)
    try:
        lake.check()
    except LakeError as error:
        assert "cannot reach the lake" in str(error)
    else:
        raise AssertionError("expected LakeError")


def test_lifecycle_never_takes_the_delta_log_offline(pg_dsn, azurite_container):
    """The policy, evaluated over the blob names the archiver really wrote (data, Delta log with a checkpoint,
    manifests), with the defaults and with the Archive tier opted in; and the same prefixes from the CLI."""
    from shared_code.storage import lifecycle

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        make_monthly_partitions(conn, months_back=26)
        due = due_partitions(conn, "public.events")
    lake_url = f"abfss://{azurite_container}@devstoreaccount1.dfs.core.windows.net/tsdb/prod"
    with engine_for(pg_dsn, lake_url, lake_connection_string=AZURITE_CONNECTION_STRING,
                    partitioned_tables=["public.events"], delta_checkpoint_interval=1) as engine:
        assert not engine.run().failed
    container = BlobServiceClient.from_connection_string(AZURITE_CONNECTION_STRING).get_container_client(azurite_container)
    names = [f"{azurite_container}/{b.name}" for b in container.list_blobs() if not b.name.endswith("/")]
    data = [n for n in names if n.endswith(".parquet") and "/_" not in n]
    log = [n for n in names if "/_delta_log/" in n]
    assert len(data) == len(due) and any(n.endswith("_last_checkpoint") for n in log)
    assert any(".checkpoint.parquet" in n for n in log)
    readers_need = [n for n in names if n not in data]  # the log, its checkpoints, the manifests
    assert any("/_tsarchive/manifests/" in n for n in readers_need)
    root = f"{azurite_container}/tsdb/prod"
    default = lifecycle.policy(root, lifecycle.TierDays(), ["public.events"])
    for name in names:
        assert lifecycle.tiers_for(default, name) == {"tierToCool": 30, "tierToCold": 90}, name  # online only
    opted = lifecycle.policy(root, lifecycle.TierDays(archive=365), ["public.events"])
    for name in readers_need:
        assert not lifecycle.is_offline_tier(lifecycle.tiers_for(opted, name)), name
    for name in data:
        assert lifecycle.tiers_for(opted, name) == {"tierToCool": 30, "tierToCold": 90, "tierToArchive": 365}, name
    result = subprocess.run([TSARCHIVE, "lifecycle", "--archive-after-days", "365", "--json"], capture_output=True,
                            text=True, env=cli_env(pg_dsn, lake_url, ARCHIVER_LAKE_CONNECTION_STRING=AZURITE_CONNECTION_STRING,
                                                   ARCHIVER_PARTITIONED_TABLES="public.events"))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["policy"] == opted and printed["bicep_parameter"].split(",") == printed["offline_tier_prefixes"]
    assert printed["offline_tier_prefixes"] == [f"{root}/public.events/year=", f"{root}/public.events/range_start="]
