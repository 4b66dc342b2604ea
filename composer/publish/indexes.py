"""The block index of each published version as a TUF target of its own, next to the
bundle: what a host reads to update by delta (hostd/formats/blockindex.py).

    <name>/<arch>/<name>-<version>-<arch>.keelbundle   custom.keel, with "index" naming:
    <name>/<arch>/<name>-<version>-<arch>.keelindex    custom.keel_index

The index target must not carry custom.keel: hostd takes every target whose
custom.keel names its image for a bundle, and a hostd of before deltas would try to
install the index. custom.keel_index says which version it indexes instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile, Targets

from composer.build.bundle import BUNDLE_SUFFIX, BundleInfo
from composer.core.files import write_atomically
from composer.core.progress import Progress
from composer.publish import chunkstore
from hostd.formats import blockindex

if TYPE_CHECKING:
    from composer.publish.repository import Repository

INDEX_SUFFIX = ".keelindex"
CUSTOM_KEY = "keel_index"


@dataclass(frozen=True)
class AddedIndex:
    """The index target one publish added, and what its chunks cost the store."""

    target_path: str
    stored_at: Path
    blocks: int
    new_chunks: int
    bytes_written: int
    reused: bool  # the same bundle was published before: its stored index was kept


def index_path(bundle_path: str) -> str:
    """The index's target path, from its bundle's: the same name, another suffix."""
    return bundle_path.removesuffix(BUNDLE_SUFFIX) + INDEX_SUFFIX


def index_custom(info: BundleInfo) -> dict[str, Any]:
    return {
        CUSTOM_KEY: {"name": info.name, "version": info.version, "architecture": info.architecture}
    }


def indexed_version(target: TargetFile) -> dict[str, Any] | None:
    """custom.keel_index of an index target; None for any other target."""
    found = (target.unrecognized_fields.get("custom") or {}).get(CUSTOM_KEY)
    return found if isinstance(found, dict) else None


def read_stored(repo: Repository, target: TargetFile) -> bytes | None:
    """The stored bytes of an index target, if they are there and match its signed
    length and sha256; None when missing or damaged."""
    path = repo.stored_target(target)
    try:
        if path.stat().st_size != target.length:
            return None
        data = path.read_bytes()
        target.verify_length_and_hashes(data)
    except (OSError, LengthOrHashMismatchError):
        return None
    return data


def _reusable(
    repo: Repository, targets: Targets, bundle_target: TargetFile
) -> tuple[TargetFile, bytes] | None:
    """The index target and bytes already published for this very bundle (same length
    and sha256), when its stored file is intact and every chunk it names is stored."""
    published = targets.targets.get(bundle_target.path)
    if published is None or (published.length, published.hashes) != (
        bundle_target.length,
        bundle_target.hashes,
    ):
        return None
    keel = (published.unrecognized_fields.get("custom") or {}).get("keel") or {}
    index_target = targets.targets.get(keel.get("index", ""))
    if index_target is None:
        return None
    data = read_stored(repo, index_target)
    if data is None:
        return None
    try:
        index = blockindex.decode(data)
    except blockindex.BlockIndexError:
        return None
    if chunkstore.missing(index, chunkstore.ChunkStore(repo.path).digests()):
        return None
    return index_target, data


def add_index(
    repo: Repository,
    targets: Targets,
    bundle_target: TargetFile,
    source: Path,
    info: BundleInfo,
    progress: Progress,
) -> AddedIndex:
    """Store the chunks and the index of a verified bundle and add the index target to
    targets (the caller then adds the bundle's, naming this one, and signs). Chunks
    are synced to disk before this returns, so before any metadata names them."""
    reused = _reusable(repo, targets, bundle_target)
    if reused is not None:
        target, data = reused
        blocks = sum(len(f.hashes) for f in blockindex.decode(data).files)
        chunked = chunkstore.Chunked(data, blocks, new_chunks=0, bytes_written=0)
    else:
        with progress.step(f"store the chunks of {info.name} {info.version}"):
            chunked = chunkstore.chunk_bundle(source, repo.path, progress)
        target = TargetFile.from_data(index_path(bundle_target.path), chunked.index, ["sha256"])
        target.unrecognized_fields["custom"] = index_custom(info)
    stored = repo.stored_target(target)
    # Named by content: a file already there is this index, unless it was damaged.
    if read_stored(repo, target) is None:
        write_atomically(stored, chunked.index)
    targets.targets[target.path] = target
    return AddedIndex(
        target.path,
        stored,
        chunked.blocks,
        chunked.new_chunks,
        chunked.bytes_written,
        reused=reused is not None,
    )
