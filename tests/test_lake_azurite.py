"""The lake writer against Azurite's Blob endpoint (the path ADLS Gen2 uses in Azure, minus the DFS rename)."""

import io
import json

import psycopg
import pyarrow.parquet as pq
from azure.storage.blob import BlobServiceClient

from shared_code.lake import Lake
from shared_code.ledger import JobState

from .conftest import AZURITE_CONNECTION_STRING, engine_for
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
    data = [n for n in names if n.endswith(".parquet")]
    assert not [n for n in data if "/_" in n]
    assert len(data) == len(due)
    assert all(n.startswith("tsdb/prod/public.events/year=") for n in data)
    # temporary blobs were removed after publishing (pyarrow may leave a hidden empty "_tmp/" folder marker)
    assert not [n for n in names if "/_tmp/" in n and not n.endswith("/")]
    manifests = [n for n in names if n.endswith(".manifest.json")]
    assert len(manifests) == len(due) and all(n.rsplit("/", 1)[1].startswith("_") for n in manifests)
    for job in ledger_jobs(pg_dsn):
        assert job.state == JobState.DROPPED
        blob = container.download_blob(f"tsdb/prod/{job.lake_paths[0]}").readall()
        archived = sorted(tuple(normalise(v) for v in r.values()) for r in pq.read_table(io.BytesIO(blob)).to_pylist())
        assert archived == sorted(tuple(normalise(v) for v in r) for r in expected[job.chunk_name])
        manifest = json.loads(container.download_blob(f"tsdb/prod/{job.manifest_path}").readall())
        assert manifest["files"][0]["sha256"] == job.checksums[job.lake_paths[0]]


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
