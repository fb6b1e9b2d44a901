"""Lake adapter over pyarrow filesystems: local files, Azurite (Blob endpoint) and ADLS Gen2.

Writes go to a hidden staging name and are published by rename (HNS, local) or server-side copy (flat
namespace, e.g. Azurite), so no partial file is ever visible under a final name. Delta commits go through
delta-rs with the URI and credentials this adapter hands out.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import IMMUTABLE_HINT, ConfigError, ImmutableStorageError, LakeError, is_immutable_refusal, render_error
from .blob import BlobOperations

if TYPE_CHECKING:
    from pyarrow import NativeFile
    from pyarrow.fs import FileSystem

log = logging.getLogger("tsarchive")

_READ_BLOCK = 8 * 1024 * 1024


def immutable_live_lake(url: str, action: str, path: str) -> ImmutableStorageError:
    return ImmutableStorageError(f"the lake {url} refused to {action} {path}: {IMMUTABLE_HINT}")


def _parse_connection_string(text: str) -> dict[str, str]:
    if text.strip() == "UseDevelopmentStorage=true":
        return {
            "AccountName": "devstoreaccount1",
            "AccountKey": "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
            "BlobEndpoint": "http://127.0.0.1:10000/devstoreaccount1",
        }
    parts = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            parts[key.strip()] = value.strip()
    return parts


@dataclass
class LakeTarget:
    """Where the archive lives, as parsed from ARCHIVER_LAKE_URL."""

    url: str
    root: str  # filesystem path of the lake root, as pyarrow sees it
    is_local: bool
    account: str | None = None
    container: str | None = None


class HashingSink(io.RawIOBase):
    """File-like sink that counts and SHA-256-hashes what it forwards."""

    def __init__(self, stream: NativeFile) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.digest.update(view)
        self.stream.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed:
            self.stream.close()
        super().close()


class Lake(BlobOperations):
    """Archive storage: one interface whatever the backend."""

    def __init__(self, lake_url: str, connection_string: str | None = None, client_id: str | None = None) -> None:
        self.url = lake_url
        self._connection_string = connection_string
        self._client_id = client_id
        self._fs: FileSystem | None = None
        self.target = self._parse(lake_url)
        self._flat_namespace = False
        self._blob_service: Any = None
        self._credential: Any = None

    @staticmethod
    def _parse(url: str) -> LakeTarget:
        parts = urlsplit(url)
        if parts.scheme == "file":
            return LakeTarget(url=url, root=unquote(parts.path).rstrip("/") or "/", is_local=True)
        if parts.scheme in ("abfss", "abfs"):
            container, _, host = parts.netloc.partition("@")
            account = host.split(".", 1)[0]
            prefix = unquote(parts.path).strip("/")
            root = f"{container}/{prefix}" if prefix else container
            return LakeTarget(url=url, root=root, is_local=False, account=account, container=container)
        raise ConfigError(f"ARCHIVER_LAKE_URL {url!r}: must start with file:// or abfss://")

    @property
    def fs(self) -> FileSystem:
        if self._fs is None:
            self._fs = self._make_fs()
        return self._fs

    def _make_fs(self) -> FileSystem:
        from pyarrow import fs as pafs

        if self.target.is_local:
            local = pafs.LocalFileSystem()
            local.create_dir(self.target.root, recursive=True)
            return local
        kwargs: dict[str, str] = {}
        account = self.target.account
        if self._connection_string:
            conn = _parse_connection_string(self._connection_string)
            account = conn.get("AccountName", account)
            if conn.get("AccountKey"):
                kwargs["account_key"] = conn["AccountKey"]
            if conn.get("BlobEndpoint"):
                endpoint = urlsplit(conn["BlobEndpoint"])
                kwargs["blob_storage_authority"] = endpoint.netloc
                kwargs["blob_storage_scheme"] = endpoint.scheme
                kwargs["dfs_storage_authority"] = endpoint.netloc
                kwargs["dfs_storage_scheme"] = endpoint.scheme
        elif self._client_id:
            kwargs["client_id"] = self._client_id  # user-assigned managed identity
        try:
            azure = pafs.AzureFileSystem(account_name=account, **kwargs)
            info = azure.get_file_info(self.target.container)
            if info.type == pafs.FileType.NotFound:
                azure.create_dir(self.target.container)
        except OSError as error:
            raise LakeError(
                f"cannot reach the lake {self.url}: {render_error(error)}. "
                "Check ARCHIVER_LAKE_URL and the identity's Storage Blob Data Contributor role."
            ) from None
        return azure

    # -- Delta Lake (delta-rs) access to a table folder ------------------------------------------
    def delta_uri(self, relative_dir: str) -> str:
        """The URI delta-rs opens for a folder of the lake."""
        if self.target.is_local:
            return self.path(relative_dir)
        inner = self.path(relative_dir).split("/", 1)[1] if "/" in self.path(relative_dir) else ""
        if self._connection_string:
            return f"az://{self.target.container}/{inner}"
        return f"abfss://{self.target.container}@{self.target.account}.dfs.core.windows.net/{inner}"

    def delta_storage_options(self) -> dict[str, str]:
        """Credentials for delta-rs: the connection string's key, or a fresh managed-identity bearer token.

        delta-rs's own managed-identity path has failed inside Azure Functions (object_store issue 4976), so the
        token comes from azure-identity, which caches it and renews it before it expires; each table access asks
        again, so a long run never holds an expired token.
        """
        if self.target.is_local:
            return {}
        if self._connection_string:
            conn = _parse_connection_string(self._connection_string)
            options = {"account_name": conn.get("AccountName", self.target.account or "")}
            if conn.get("AccountKey"):
                options["account_key"] = conn["AccountKey"]
            if conn.get("BlobEndpoint"):
                options["endpoint"] = conn["BlobEndpoint"].rstrip("/")
                if conn["BlobEndpoint"].startswith("http://"):
                    options["allow_http"] = "true"
            return options
        return {"account_name": self.target.account or "", "bearer_token": self._storage_token()}

    def _make_credential(self) -> Any:
        """The managed identity (a user-assigned one by client id), falling back to the developer's login."""
        from azure.identity import DefaultAzureCredential

        if self._client_id:
            return DefaultAzureCredential(managed_identity_client_id=self._client_id)
        return DefaultAzureCredential()

    def _storage_token(self) -> str:
        if self._credential is None:
            self._credential = self._make_credential()
        try:
            return self._credential.get_token("https://storage.azure.com/.default").token
        except Exception as error:  # noqa: BLE001 - azure-identity raises several unrelated classes
            raise LakeError(f"cannot get a storage token for {self.url}: {render_error(error)}. "
                            "Check the managed identity (ARCHIVER_LAKE_CLIENT_ID) and its Storage Blob Data "
                            "Contributor role.") from None

    def path(self, relative: str) -> str:
        return f"{self.target.root}/{relative}" if relative else self.target.root

    # -- writing -----------------------------------------------------------------------------
    def open_write(self, relative: str) -> HashingSink:
        target = self.path(relative)
        if self.target.is_local:
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        return HashingSink(self.fs.open_output_stream(target))

    def write_bytes(self, relative: str, data: bytes) -> None:
        with self.open_write(relative) as sink:
            sink.write(data)

    def move(self, source: str, destination: str) -> None:
        """Atomically publish (rename); on a flat namespace, server-side copy then delete."""
        src, dst = self.path(source), self.path(destination)
        if self.target.is_local:
            self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        try:
            if not self._flat_namespace:
                try:
                    self.fs.move(src, dst)
                    return
                except NotImplementedError:  # pyarrow: Move() needs a hierarchical namespace
                    self._flat_namespace = True
            if self._blob_sdk:
                self._copy_blob(src, dst)
                self._delete_blob(src)
                return
            self.fs.copy_file(src, dst)
            self.fs.delete_file(src)
        except Exception as error:
            if is_immutable_refusal(error):
                raise immutable_live_lake(self.url, "move", source) from None
            raise

    def delete(self, relative: str) -> None:
        try:
            if self._blob_sdk:
                self._delete_blob(self.path(relative))
                return
            try:
                self.fs.delete_file(self.path(relative))
            except FileNotFoundError:
                pass
        except Exception as error:
            if is_immutable_refusal(error):
                raise immutable_live_lake(self.url, "delete", relative) from None
            raise

    def delete_quietly(self, relative: str) -> bool:
        """Best-effort delete of a file nothing references any more: a refusal is logged, never raised."""
        try:
            self.delete(relative)
            return True
        except Exception as error:  # noqa: BLE001 - cleanup must not fail a job whose data is already safe
            log.warning("could not delete %s from the lake (%s); it stays, unreferenced", relative, render_error(error))
            return False

    # -- reading -----------------------------------------------------------------------------
    def exists(self, relative: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.path(relative)).type == pafs.FileType.File

    def size(self, relative: str) -> int | None:
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.path(relative))
        return info.size if info.type == pafs.FileType.File else None

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(relative)) as stream:
            while block := stream.read(_READ_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def sha256_parts(self, relative: str, parts: list[tuple[int, int]]) -> tuple[str, list[str]]:
        """One read of a file: its SHA-256 and each part's (file_parts.py)."""
        from .file_parts import digest_parts

        with self.fs.open_input_stream(self.path(relative)) as stream:
            return digest_parts(lambda: stream.read(_READ_BLOCK), parts)

    def read_range(self, relative: str, offset: int, length: int) -> bytes:
        """`length` bytes of a file from `offset` (one ranged read in Azure)."""
        with self.fs.open_input_file(self.path(relative)) as handle:
            data = handle.read_at(length, offset)
        return data if isinstance(data, bytes) else data.to_pybytes()

    def open_read(self, relative: str) -> NativeFile:
        return self.fs.open_input_file(self.path(relative))

    def list_files(self, relative_dir: str) -> list[str]:
        """Files under a folder, relative to the lake root; empty when the folder is missing."""
        from pyarrow import fs as pafs

        base = self.path(relative_dir)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []
        root = self.target.root + "/"
        return sorted(i.path.removeprefix(root) for i in infos if i.type == pafs.FileType.File)

    def file_ages(self, relative_dir: str, now: float) -> dict[str, float]:
        """Files under a folder with their age in seconds (from the storage's modification time)."""
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(relative_dir), recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return {}
        root = self.target.root + "/"
        return {i.path.removeprefix(root): now - (i.mtime.timestamp() if i.mtime else now)
                for i in infos if i.type == pafs.FileType.File}

    def check(self) -> None:
        """Raise LakeError unless the lake root is reachable."""
        try:
            self.fs.get_file_info(self.target.root)
        except OSError as error:
            raise LakeError(f"cannot reach the lake {self.url}: {render_error(error)}") from None

    def delete_tree(self, relative_dir: str) -> None:
        """Delete a folder and everything under it; nothing if it is missing."""
        for path in self.list_files(relative_dir):
            self.delete(path)
        try:
            self.fs.delete_dir(self.path(relative_dir))
        except (FileNotFoundError, OSError):
            pass  # flat namespaces have no folders; a folder already gone is fine
