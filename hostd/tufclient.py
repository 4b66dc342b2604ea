"""The update repository through The Update Framework (python-tuf's ngclient).

Nothing from the repository is trusted until ngclient has verified the metadata chain
(root -> timestamp -> snapshot -> targets: signatures by the keys the image's root
names, versions, expiry) and the bundle's length and sha256 against the signed targets
metadata. Only then does a byte of it go anywhere near a partition.

The repository is plain files: http(s):// through ngclient's own fetcher, or file://
(a copy on a USB stick, for hosts with no network) through FileFetcher below.

A bundle is verified as a copy in hostd's private folder, never at a path someone else
can write: download() fetches into that folder, copy_matching() copies a local file
there (read once, through one handle) and finds the signed target the copy is."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

import urllib3
from tuf.api import exceptions
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, Urllib3Fetcher

from hostd.files import UnsafeFile, open_untrusted, replacing
from hostd.formats import blockindex
from hostd.formats.sizes import MIB
from hostd.formats.version import version_key

log = logging.getLogger("keel.hostd")

TRUST_ROOT = Path("/usr/lib/keel/update/root.json")
CACHE_DIR = Path("/var/lib/keel/update/tuf")
CHUNK = MIB
KIB = 1024


# How slow a bundle download may be before hostd gives it up and frees the update lock:
# ngclient's socket timeout bounds single reads only, which a mirror sending a byte
# every few seconds passes for hours. Pace reads these when a download starts.
MIN_RATE = 16 * KIB  # bytes a second, over each RATE_WINDOW seconds after RATE_GRACE
RATE_WINDOW = 60.0
RATE_GRACE = 60.0
DEADLINE_RATE = 8 * KIB  # the whole download may take its length at this rate,
DEADLINE_FLOOR = 15 * 60.0  # and never needs to be faster than this many seconds


def deadline_seconds(length: int) -> float:
    """How long fetching length bytes may take in all (DEADLINE_RATE, DEADLINE_FLOOR)."""
    return max(DEADLINE_FLOOR, length / DEADLINE_RATE)


class Pace:
    """Whether a download keeps to the limits above; check() after every piece that
    arrives (each read returns within the fetcher's socket timeout, so it runs)."""

    def __init__(self, length: int) -> None:
        self.started = time.monotonic()
        self.seconds = deadline_seconds(length)
        self.min_rate, self.window, self.grace = MIN_RATE, RATE_WINDOW, RATE_GRACE
        # (time, bytes received): the oldest is the last one at or before the window.
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])

    def check(self, received: int) -> None:
        now = time.monotonic()
        if now - self.started > self.seconds:
            raise exceptions.SlowRetrievalError(
                f"the download did not finish within {self.seconds:.0f} s"
            )
        self.samples.append((now, received))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()
        since, base = self.samples[0]
        if now - self.started < self.grace or now - since < self.window:
            return
        rate = (received - base) / (now - since)
        if rate < self.min_rate:
            raise exceptions.SlowRetrievalError(
                f"the mirror sent {rate / KIB:.1f} KiB/s over the last {now - since:.0f} s, "
                f"less than the {self.min_rate / KIB:.0f} KiB/s hostd waits for"
            )


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
    # The target's whole custom.keel (rollout, halted: hostd/rollout.py).
    keel: dict[str, Any] = field(default_factory=dict, compare=False)


class FileFetcher(FetcherInterface):
    """file:// URLs; a missing file is a 404, which ends ngclient's root walk. The copy
    may be on media others can write: no links, only regular files (files.py)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            handle = open_untrusted(path)
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path} not found", 404) from None
        except UnsafeFile as error:
            raise exceptions.DownloadError(str(error)) from None
        return _read_chunks(handle)


class HttpFetcher(Urllib3Fetcher):
    """ngclient's http(s) fetcher, yielding bytes as they arrive. Its own _chunks()
    (replaced here; tuf is pinned below 8) waits for whole 400 kB chunks, which a
    trickling mirror takes hours to fill, and only between chunks can a download's
    Pace be checked (test_download_pace.py fails if this hook is no longer called)."""

    def _chunks(self, response: urllib3.response.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            while block := response.read1(self.chunk_size):
                yield block
        except GeneratorExit:
            # The download gave up mid-body (too slow, too long): not a reusable connection.
            response.close()
            raise
        except urllib3.exceptions.HTTPError as error:
            if isinstance(error, urllib3.exceptions.TimeoutError):
                raise exceptions.SlowRetrievalError(
                    f"no data for {self.socket_timeout} s"
                ) from error
            # The mirror closed the connection mid-body, or sent garbage.
            raise exceptions.DownloadError(f"the download broke off: {error}") from error
        finally:
            response.release_conn()


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
            else HttpFetcher(app_user_agent="keel-hostd")
        )
        # Signed targets of this image that candidates() left out: path -> why.
        self.skipped: dict[str, str] = {}
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
        """Every bundle of this image name and architecture in the verified metadata.

        Targets hostd cannot use (a version the version grammar rejects) are left out
        and named in self.skipped: old targets stay in the metadata, so one bad target
        would otherwise stop every later check and update."""
        if not self._refreshed:
            self.refresh()
        # ngclient stores targets.json in its cache only after verifying it.
        targets = Metadata[Targets].from_file(str(self.cache_dir / "targets.json")).signed
        found = []
        self.skipped = {}
        for path, target in targets.targets.items():
            keel = (target.unrecognized_fields.get("custom") or {}).get("keel")
            if not isinstance(keel, dict):
                continue
            if keel.get("name") != name or keel.get("architecture") != architecture:
                continue
            problem = _unusable(keel)
            if problem:
                log.warning("signed target %s skipped: %s", path, problem)
                self.skipped[path] = problem
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
                    dict(keel),
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
        """Fetch a bundle to dest (via a temporary file) and verify it against the metadata.

        dest is in hostd's private folder: the file verified is the file applied."""
        received = 0
        pace = Pace(candidate.length)
        blocks: Iterator[bytes] = iter(())
        try:
            with replacing(dest) as handle:
                blocks = self.fetcher.fetch(self._target_url(candidate.target))
                for block in blocks:
                    received += len(block)
                    if received > candidate.length:
                        raise RepositoryRefused(
                            f"{candidate.path} is longer than the {candidate.length} bytes "
                            "the signed metadata gives (tampered?)"
                        )
                    handle.write(block)
                    progress(received)
                    pace.check(received)
                handle.flush()
                # Inside the block: a bundle that fails verification never becomes dest.
                verify_file(candidate.target, Path(handle.name))
        except exceptions.DownloadError as error:
            raise RepositoryRefused(_explain(error)) from None
        finally:
            # Now, not when the traceback that holds it goes: a connection or a file.
            if isinstance(blocks, Generator):
                blocks.close()
        return dest

    def fetch_index(self, candidate: Candidate, folder: Path) -> tuple[bytes, int] | None:
        """The block index of candidate (a delta update's map, hostd/delta.py), verified
        against the signed metadata, and the bytes downloaded for it (0 when the copy
        kept in folder from an earlier attempt was still good); None if the repository
        publishes none for it."""
        path = candidate.keel.get("index")
        if not isinstance(path, str):
            return None
        try:
            info = self.updater.get_targetinfo(path)
            if info is None:
                raise RepositoryRefused(f"the signed metadata has no target {path}")
            if info.length > blockindex.MAX_INDEX:
                raise RepositoryRefused(f"{path} is {info.length} bytes, more than an index")
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.iterdir():
                if stale.name != info.path.rpartition("/")[2]:
                    stale.unlink()
            local = str(folder / info.path.rpartition("/")[2])
            found = self.updater.find_cached_target(info, local)
            if found is not None:
                return Path(found).read_bytes(), 0
            raw = Path(self.updater.download_target(info, local)).read_bytes()
            return raw, len(raw)
        except exceptions.LengthOrHashMismatchError as error:
            raise RepositoryRefused(
                f"the block index {path} does not match the signed targets metadata "
                f"(tampered?): {error}"
            ) from None
        except (exceptions.RepositoryError, exceptions.DownloadError) as error:
            raise RepositoryRefused(f"the block index {path}: {_explain(error)}") from None


def copy_matching(
    source: BinaryIO, dest: Path, candidates: list[Candidate], image: str, name: str
) -> Candidate:
    """Copy a local bundle (opened with open_untrusted(); name is for messages) to dest,
    hashing it on the way, and return the candidate the copy is (by length and hashes).
    Only dest is used afterwards, never the file source came from."""
    size = os.fstat(source.fileno()).st_size
    fitting = [c for c in candidates if c.length == size]
    if fitting:
        algorithms = {algorithm for c in fitting for algorithm in c.target.hashes}
        length, digests = _copy_hashing(source, dest, size, algorithms)
        for candidate in fitting:
            wanted = candidate.target.hashes
            if length == candidate.length and all(digests.get(a) == h for a, h in wanted.items()):
                return candidate
    raise RepositoryRefused(
        f"{name} is not a bundle the repository's signed targets metadata lists for "
        f"{image} (tampered, truncated, or from another repository)"
    )


def _unusable(keel: dict[str, object]) -> str | None:
    """Why a target's custom.keel makes it no candidate, or None."""
    version = keel.get("version")
    if not isinstance(version, str):
        return f"its version is {version!r}, not a string"
    try:
        version_key(version)
    except ValueError:
        return f"its version {version!r} is not an image version (like 1.2.3 or 2.0-rc1)"
    return None


def _copy_hashing(
    source: BinaryIO, dest: Path, limit: int, algorithms: set[str]
) -> tuple[int, dict[str, str]]:
    """Copy at most limit bytes of source to dest; the length and the digests of what
    was copied (algorithms hashlib does not know are left out, so never match)."""
    hashers = {}
    for algorithm in algorithms:
        try:
            hashers[algorithm] = hashlib.new(algorithm)
        except ValueError:
            continue
    length = 0
    with replacing(dest) as handle:
        # One byte more than the limit: a file that grew while read is not the target.
        while block := source.read(min(CHUNK, limit + 1 - length)):
            length += len(block)
            for hasher in hashers.values():
                hasher.update(block)
            handle.write(block)
            if length > limit:
                break
    return length, {algorithm: hasher.hexdigest() for algorithm, hasher in hashers.items()}


def verify_file(target: TargetFile, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            target.verify_length_and_hashes(handle)
    except exceptions.LengthOrHashMismatchError as error:
        raise RepositoryRefused(_explain(error)) from None
