"""The update repository through The Update Framework (python-tuf's ngclient).

Nothing from the repository is trusted until ngclient has verified the metadata chain
(root -> timestamp -> snapshot -> targets: signatures by the keys the image's root
names, versions, expiry) and the bundle's length and sha256 against the signed targets
metadata. Only then does a byte of it go anywhere near a partition.

The repository is plain files: http(s):// through ngclient's own fetcher, or file://
(a copy on a USB stick, for hosts with no network) through FileFetcher below."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from tuf.api import exceptions
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, Urllib3Fetcher

from hostd.files import replacing
from hostd.formats.sizes import MIB

TRUST_ROOT = Path("/usr/lib/keel/update/root.json")
CACHE_DIR = Path("/var/lib/keel/update/tuf")
CHUNK = MIB


class RepositoryRefused(Exception):
    """The repository or a bundle failed verification; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """A bundle the signed targets metadata offers."""

    path: str
    name: str
    version: str
    architecture: str
    kernel_version: str
    length: int
    target: TargetFile


class FileFetcher(FetcherInterface):
    """file:// URLs; a missing file is a 404, which ends ngclient's root walk."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path} not found", 404) from None
        return _read_chunks(handle)


def _read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK):
            yield block


def _explain(error: Exception) -> str:
    """A repository error as an operator reads it."""
    if isinstance(error, exceptions.ExpiredMetadataError):
        return f"the repository's metadata has expired ({error})"
    if isinstance(error, exceptions.UnsignedMetadataError):
        return f"metadata is not signed by the keys this image trusts ({error})"
    if isinstance(error, exceptions.BadVersionNumberError):
        return f"metadata version went backwards (rollback attack or broken repository): {error}"
    if isinstance(error, exceptions.LengthOrHashMismatchError):
        return f"the bundle does not match the signed targets metadata (tampered?): {error}"
    if isinstance(error, exceptions.DownloadError):
        return f"cannot download from the repository: {error}"
    if isinstance(error, exceptions.RepositoryError):
        return f"the repository's metadata failed verification: {error}"
    return str(error)


class Repository:
    def __init__(
        self,
        url: str,
        trust_root: Path = TRUST_ROOT,
        cache_dir: Path = CACHE_DIR,
    ) -> None:
        if not url:
            raise RepositoryRefused("no update repository configured (policy 'repository')")
        if not trust_root.is_file():
            raise RepositoryRefused(
                f"this image has no update trust root ({trust_root}); it refuses every update"
            )
        base = url.rstrip("/")
        self.url = base
        self.fetcher: FetcherInterface = (
            FileFetcher()
            if base.startswith("file://")
            else Urllib3Fetcher(app_user_agent="keel-hostd")
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir
        try:
            # The image's root every time: ngclient then walks any newer roots from its
            # cache, so a root rotation the host already saw is kept.
            self.updater = Updater(
                metadata_dir=str(cache_dir),
                metadata_base_url=f"{base}/metadata/",
                target_base_url=f"{base}/targets/",
                fetcher=self.fetcher,
                bootstrap=trust_root.read_bytes(),
            )
        except (OSError, exceptions.RepositoryError) as error:
            raise RepositoryRefused(f"the image's trust root is unusable: {error}") from None
        self._refreshed = False

    def refresh(self) -> None:
        try:
            self.updater.refresh()
        except (exceptions.RepositoryError, exceptions.DownloadError, OSError) as error:
            raise RepositoryRefused(_explain(error)) from None
        self._refreshed = True

    def candidates(self, name: str, architecture: str) -> list[Candidate]:
        """Every bundle of this image name and architecture in the verified metadata."""
        if not self._refreshed:
            self.refresh()
        # ngclient stores targets.json in its cache only after verifying it.
        targets = Metadata[Targets].from_file(str(self.cache_dir / "targets.json")).signed
        found = []
        for path, target in targets.targets.items():
            keel = (target.unrecognized_fields.get("custom") or {}).get("keel")
            if not isinstance(keel, dict):
                continue
            if keel.get("name") != name or keel.get("architecture") != architecture:
                continue
            found.append(
                Candidate(
                    path,
                    str(keel.get("name")),
                    str(keel.get("version")),
                    str(keel.get("architecture")),
                    str(keel.get("kernel_version", "")),
                    target.length,
                    target,
                )
            )
        return found

    def _target_url(self, target: TargetFile) -> str:
        # Consistent snapshots: targets/<dir>/<sha256>.<file name>.
        directory, sep, basename = target.path.rpartition("/")
        digest = target.hashes.get("sha256") or next(iter(target.hashes.values()))
        return f"{self.url}/targets/{directory}{sep}{digest}.{basename}"

    def download(
        self, candidate: Candidate, dest: Path, progress: Callable[[int], None] = lambda _: None
    ) -> Path:
        """Fetch a bundle to dest (via a temporary file) and verify it against the metadata."""
        received = 0
        try:
            with replacing(dest) as handle:
                for block in self.fetcher.fetch(self._target_url(candidate.target)):
                    received += len(block)
                    if received > candidate.length:
                        raise RepositoryRefused(
                            f"{candidate.path} is longer than the {candidate.length} bytes "
                            "the signed metadata gives (tampered?)"
                        )
                    handle.write(block)
                    progress(received)
                handle.flush()
                # Inside the block: a bundle that fails verification never becomes dest.
                verify_file(candidate.target, Path(handle.name))
        except exceptions.DownloadError as error:
            raise RepositoryRefused(_explain(error)) from None
        return dest

    def match_file(self, path: Path, name: str, architecture: str) -> Candidate:
        """The signed target that a local bundle file is (by length and sha256)."""
        size = path.stat().st_size
        for candidate in self.candidates(name, architecture):
            if candidate.length != size:
                continue
            try:
                verify_file(candidate.target, path)
            except RepositoryRefused:
                continue
            return candidate
        raise RepositoryRefused(
            f"{path.name} is not a bundle the repository's signed targets metadata lists for "
            f"{name}/{architecture} (tampered, truncated, or from another repository)"
        )


def verify_file(target: TargetFile, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            target.verify_length_and_hashes(handle)
    except exceptions.LengthOrHashMismatchError as error:
        raise RepositoryRefused(_explain(error)) from None
