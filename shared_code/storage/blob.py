"""What only the Blob API does for the lake: access tiers and rehydration, create-only uploads (the vault), and
copies and deletes by the Blob SDK where pyarrow's are slow. `Lake` inherits these; nothing else calls the SDK."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import LakeError

if TYPE_CHECKING:
    from .lake import LakeTarget

_READ_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class OfflineFile:
    """A lake file that cannot be read until rehydrated."""

    path: str
    bytes: int
    status: str  # archived | rehydrate-pending-to-hot | rehydrate-pending-to-cool | ...


def offline_summary(files: list[OfflineFile]) -> str:
    """'3 file(s), 1.2 MiB, in the Archive tier (offline), e.g. <path>'."""
    total = sum(f.bytes for f in files)
    pending = sum(1 for f in files if f.status.startswith("rehydrate-pending"))
    state = f"{pending} of them rehydrating" if pending else "not rehydrating"
    return (f"{len(files)} file(s), {total} bytes, in the Archive tier (offline; {state}), e.g. {files[0].path}"
            if files else "no offline files")


class BlobOperations:
    """The Blob SDK side of `Lake` (it provides `url`, `target`, `path`, `size`, `list_files` and the credential)."""

    url: str
    target: LakeTarget
    _connection_string: str | None
    _blob_service: Any

    def path(self, relative: str) -> str:
        raise NotImplementedError

    def size(self, relative: str) -> int | None:
        raise NotImplementedError

    def list_files(self, relative_dir: str) -> list[str]:
        raise NotImplementedError

    def _make_credential(self) -> Any:
        raise NotImplementedError

    @property
    def _blob_sdk(self) -> bool:
        """Key-authorised blob storage (a connection string: Azurite, or a key-based account): copies and deletes go
        through the Blob SDK. pyarrow's delete now and then stalled 7-15 s there (1 in 40 on Azurite, measured)."""
        return bool(self._connection_string) and not self.target.is_local

    def _blob_client(self, path: str) -> Any:
        """A Blob SDK client for a lake path (`<container>/<name>`): by connection string, or by the identity."""
        from azure.storage.blob import BlobServiceClient

        if self._blob_service is None:
            if self._connection_string:
                self._blob_service = BlobServiceClient.from_connection_string(self._connection_string)
            else:
                host = urlsplit(self.url).netloc.partition("@")[2].replace(".dfs.", ".blob.", 1)
                self._blob_service = BlobServiceClient(f"https://{host}", credential=self._make_credential())
        container, name = path.split("/", 1)
        return self._blob_service.get_blob_client(container, name)

    # -- access tiers ------------------------------------------------------------------------
    def offline(self, relatives: list[str]) -> list[OfflineFile]:
        """The files among these that cannot be read now: in the Archive tier, or still being rehydrated from it.
        A local lake has no tiers; a missing file is not offline (the check reports it as missing)."""
        if self.target.is_local:
            return []
        from azure.core.exceptions import ResourceNotFoundError

        found = []
        for relative in relatives:
            try:
                props = self._blob_client(self.path(relative)).get_blob_properties()
            except ResourceNotFoundError:
                continue
            status = props.archive_status or ""
            if str(props.blob_tier or "").lower() == "archive" or status.startswith("rehydrate-pending"):
                found.append(OfflineFile(relative, int(props.size or 0), status or "archived"))
        return found

    def rehydrate(self, relative: str, tier: str = "Hot", priority: str = "Standard") -> tuple[bool, bool]:
        """Bring one blob back online if it is offline: (whether a rehydration was started now, whether it is
        readable now). Azure keeps it pending for up to 15 hours; Azurite makes it online at once."""
        if self.target.is_local:
            return False, True
        client = self._blob_client(self.path(relative))
        props = client.get_blob_properties()
        if (props.archive_status or "").startswith("rehydrate-pending"):
            return False, False
        if str(props.blob_tier or "").lower() != "archive":
            return False, True
        client.set_standard_blob_tier(tier, rehydrate_priority=priority)
        after = client.get_blob_properties()
        return True, str(after.blob_tier or "").lower() != "archive" and not after.archive_status

    def tier_bytes(self, relative_dir: str) -> dict[str, int]:
        """Bytes per access tier (Hot, Cool, Cold, Archive) of everything under a folder, from one paged listing;
        a local lake has no tiers ('local')."""
        if self.target.is_local:
            return {"local": sum(self.size(f) or 0 for f in self.list_files(relative_dir))}
        container, _, prefix = self.path(relative_dir).partition("/")
        self._blob_client(f"{container}/x")  # makes the service client
        out: dict[str, int] = {}
        for blob in self._blob_service.get_container_client(container).list_blobs(name_starts_with=f"{prefix}/"):
            if blob.name.endswith("/"):
                continue
            tier = str(blob.blob_tier or "Hot")
            out[tier] = out.get(tier, 0) + int(blob.size or 0)
        return out

    def _delete_blob(self, path: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob_client(path).delete_blob()
        except ResourceNotFoundError:
            pass

    def _copy_blob(self, src: str, dst: str) -> None:
        """Server-side copy with the Blob SDK, polled every 50 ms (key-authorised: the same key authorises the source)."""
        target, source = self._blob_client(dst), self._blob_client(src)
        status = target.start_copy_from_url(source.url).get("copy_status")
        deadline = time.monotonic() + 600
        while status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = target.get_blob_properties().copy.status
        if status != "success":
            raise LakeError(f"copying {src} to {dst} in the lake ended as {status!r}; the next run retries")

    # -- create-only writes (the vault) ---------------------------------------------------------
    def create_only(self, relative: str, source: Any, length: int) -> bool:
        """Write a new file from a readable stream, never replacing one: True if created, False if the name existed.

        Azure: one Put Blob / Put Block List with If-None-Match: * and no later property or metadata call (under a
        WORM policy any call after the create is refused). Local: a temporary file hard-linked into place.
        """
        target = self.path(relative)
        if self.target.is_local:
            folder = target.rsplit("/", 1)[0]
            os.makedirs(folder, exist_ok=True)
            temporary = f"{folder}/.{uuid.uuid4().hex}.tmp"
            try:
                with open(temporary, "xb") as out:
                    while block := source.read(_READ_BLOCK):
                        out.write(block)
                try:
                    os.link(temporary, target)
                except FileExistsError:
                    return False
                return True
            finally:
                os.unlink(temporary)
        from azure.core.exceptions import ResourceExistsError

        try:
            self._blob_client(target).upload_blob(source, length=length, overwrite=False, max_concurrency=4)
        except ResourceExistsError:
            return False
        return True
