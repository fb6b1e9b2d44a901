"""The vault: immutable final copies of each archive, for a container under a time-based WORM policy.

Why a second container: on a hierarchical-namespace account a container-level WORM policy forbids renaming, deleting
and overwriting protected blobs, and the live Delta table needs all three (publish by rename, a re-archive replacing
a chunk's files, `_delta_log/_last_checkpoint`). The vault only ever creates: each verified data file is copied once,
create-only, under the same name it has in the live table, then read back and compared by SHA-256; then one manifest
per archive attempt seals them. Nothing here renames, overwrites or deletes, so the policy never refuses a call.

Layout, relative to ARCHIVER_VAULT_URL:
  data/<live path>                                   every file any sealed archive held (names carry the attempt token)
  manifests/<table>/<chunk stem>/j<job>-<token>.json one per sealed attempt; the newest of a chunk is current and
                                                     lists the earlier ones it supersedes
Data and manifests have separate prefixes so a lifecycle rule can move `data/` to the Archive tier and keep the
manifests online.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ArchiverError, VerificationError, render_error

if TYPE_CHECKING:
    from ..ledger.jobs import Job
    from ..settings import Settings
    from .lake import Lake
    from .layout import ChunkLayout
    from .manifest import FileEntry

FORMAT = "tsarchive-vault-manifest"
_MANIFEST_LIMIT = 16 * 1024 * 1024  # a manifest is read from the lake: refuse anything absurd before parsing it


def data_path(live_path: str) -> str:
    return f"data/{live_path}"


def manifest_path(layout: ChunkLayout, job_id: int, token: str) -> str:
    return f"manifests/{layout.table_dir}/{layout.stem}/j{job_id}-{token}.json"


def make_vault(settings: Settings) -> Vault | None:
    """The vault the settings name (ARCHIVER_VAULT_URL), or None when it is off."""
    if not settings.vault_url:
        return None
    from .lake import Lake

    secret = settings.vault_connection_string or settings.lake_connection_string
    return Vault(Lake(settings.vault_url, secret.get_secret_value() if secret else None, settings.lake_client_id))


@dataclass(frozen=True)
class Seal:
    """Where an archive's vault manifest is, and its SHA-256 (recorded in the ledger)."""

    manifest_path: str
    manifest_sha256: str


class Vault:
    """Create-only copies of verified archives in a separate (immutable) container."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    # -- sealing ------------------------------------------------------------------------------
    def seal(self, source: Lake, files: list[FileEntry], layout: ChunkLayout, job_id: int, token: str,
             record: dict[str, Any]) -> Seal:
        """Copy each file (create-only, read back), then write the manifest; safe to repeat after a crash."""
        entries = []
        for entry in files:
            target = data_path(entry.path)
            self._put_file(source, entry.path, target, entry.bytes, entry.sha256)
            entries.append({"path": target, "live_path": entry.path, "rows": entry.rows, "bytes": entry.bytes,
                            "sha256": entry.sha256})
        folder = manifest_path(layout, job_id, token).rsplit("/", 1)[0]
        own = manifest_path(layout, job_id, token)
        earlier = sorted(p for p in self.lake.list_files(folder) if p.endswith(".json") and p != own)
        document = {"format": FORMAT, "version": 1, **record, "job_id": job_id, "token": token, "files": entries,
                    "supersedes": earlier}
        body = json.dumps(document, indent=1, sort_keys=True, default=str).encode()
        if not self.lake.create_only(own, io.BytesIO(body), len(body)) \
                and hashlib.sha256(self.lake.read_bytes(own)).digest() != hashlib.sha256(body).digest():
            raise ArchiverError(f"the vault already holds a different manifest at {own}; an immutable file cannot be "
                                "replaced, so this attempt stops here (the next attempt writes under a new token)")
        return Seal(own, hashlib.sha256(body).hexdigest())

    def _put_file(self, source: Lake, live_path: str, target: str, size: int, sha256: str) -> None:
        if self.lake.size(target) is None:
            with source.open_read(live_path) as stream:
                self.lake.create_only(target, stream, size)  # False: a concurrent or earlier copy won; checked next
        found = self.lake.sha256(target)
        if found != sha256:
            raise VerificationError(
                f"the vault copy {target} has checksum {found[:12]}, the archive {sha256[:12]}; it cannot be replaced "
                "(immutable), so this attempt fails and the next one writes under a new token")

    # -- checking -----------------------------------------------------------------------------
    def manifest(self, job: Job) -> dict[str, Any]:
        """The job's vault manifest, read and checked against the SHA-256 the ledger recorded."""
        path = job.vault_manifest
        if not path:
            raise VerificationError("no vault copy recorded")
        size = self.lake.size(path)
        if size is None:
            raise VerificationError(f"vault manifest {path}: missing")
        if size > _MANIFEST_LIMIT:
            raise VerificationError(f"vault manifest {path}: {size} bytes, more than a manifest can be")
        body = self.lake.read_bytes(path)
        if hashlib.sha256(body).hexdigest() != job.vault_manifest_sha256:
            raise VerificationError(f"vault manifest {path}: checksum differs from the ledger")
        try:
            document = json.loads(body)
        except ValueError as error:
            raise VerificationError(f"vault manifest {path}: not JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("job_id") != job.id:
            raise VerificationError(f"vault manifest {path}: not the vault manifest of job {job.id}")
        return document

    def problems(self, job: Job, *, checksum: bool) -> list[str]:
        """What is wrong with a job's vault copy: manifest, the files it lists against the ledger, sizes, digests.

        checksum reads every online copy back; offline ones (Archive tier) are checked by size only.
        """
        try:
            document = self.manifest(job)
        except VerificationError as error:
            return [str(error)]
        except OSError as error:
            return [f"vault manifest {job.vault_manifest}: unreadable ({render_error(error)})"]
        listed = {f.get("live_path"): f for f in document.get("files", []) if isinstance(f, dict)}
        problems = [f"{path}: in the ledger but not in the vault manifest" for path in job.lake_paths
                    if path not in listed]
        problems += [f"{path}: checksum in the vault manifest differs from the ledger" for path in job.lake_paths
                     if path in listed and listed[path].get("sha256") != job.checksums.get(path)]
        if problems:
            return problems
        offline = {f.path for f in self.lake.offline([data_path(p) for p in job.lake_paths])} if checksum else set()
        for path in job.lake_paths:
            target, recorded = data_path(path), listed[path]
            try:
                size = self.lake.size(target)
                if size is None:
                    problems.append(f"vault {target}: missing")
                elif size != recorded.get("bytes"):
                    problems.append(f"vault {target}: {size} bytes, the manifest says {recorded.get('bytes')}")
                elif checksum and target not in offline and self.lake.sha256(target) != recorded["sha256"]:
                    problems.append(f"vault {target}: checksum differs from the ledger")
            except OSError as error:
                problems.append(f"vault {target}: unreadable ({render_error(error)})")
        return problems

