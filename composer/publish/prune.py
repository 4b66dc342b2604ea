"""`keel prune`: keep the newest versions of each image in a repository, and delete what
only the others needed.

Two phases, in this order, under the repository's lock:

1. The dropped versions' bundle and index targets leave the targets metadata, and
   targets, snapshot and timestamp are signed again. From then on no client is
   offered them.
2. Files no signed target and no kept index names are deleted: stored targets,
   chunks, and temporaries an interrupted publish left.

Phase 2 decides from the signed metadata as it now is, not from what phase 1 removed,
so a run stopped between the two (or a publish stopped after writing its chunks) only
leaves files the next run deletes. A version's own files are never deleted while
metadata still names it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile, Targets

from composer.core.errors import KeelError
from composer.publish import chunkstore, indexes, keys
from composer.publish.repository import (
    DEFAULT_EXPIRIES,
    Repository,
    load_state,
    publishing_signers,
    sign_top_level,
)
from hostd.formats import blockindex
from hostd.formats.version import version_key


@dataclass(frozen=True)
class Version:
    name: str
    architecture: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.architecture})"


@dataclass
class Pruned:
    """What a prune removed (or, with dry_run, would remove)."""

    dry_run: bool
    kept: list[Version] = field(default_factory=list)
    removed: list[Version] = field(default_factory=list)
    unordered: list[Version] = field(default_factory=list)  # kept: no place in the order
    targets: list[str] = field(default_factory=list)  # target paths taken out of metadata
    files: list[Path] = field(default_factory=list)  # deleted from disk
    chunks: int = 0  # of files, how many were chunks
    bytes_freed: int = 0
    targets_version: int | None = None  # the new targets metadata, if re-signed


def _bundle_version(target: TargetFile) -> Version | None:
    keel = (target.unrecognized_fields.get("custom") or {}).get("keel")
    if not isinstance(keel, dict):
        return None
    try:
        return Version(str(keel["name"]), str(keel["architecture"]), str(keel["version"]))
    except KeyError:
        return None


def _index_version(target: TargetFile) -> Version | None:
    found = indexes.indexed_version(target)
    if found is None:
        return None
    try:
        return Version(str(found["name"]), str(found["architecture"]), str(found["version"]))
    except KeyError:
        return None


def _choose(targets: Targets, keep: int, pruned: Pruned) -> set[Version]:
    """The versions to drop: all but the newest keep of each image and architecture.
    A version the order cannot place (published with --force) is kept."""
    lines: dict[tuple[str, str], set[Version]] = defaultdict(set)
    for target in targets.targets.values():
        version = _bundle_version(target)
        if version is not None:
            lines[version.name, version.architecture].add(version)
    dropped: set[Version] = set()
    for line in lines.values():
        ordered = []
        for version in line:
            try:
                ordered.append((version_key(version.version), version))
            except ValueError:
                pruned.unordered.append(version)
        ordered.sort(key=lambda pair: pair[0], reverse=True)
        pruned.kept += [version for _, version in ordered[:keep]]
        dropped.update(version for _, version in ordered[keep:])
    pruned.kept.sort(key=lambda v: (v.name, v.architecture, version_key(v.version)))
    pruned.removed = sorted(dropped, key=lambda v: (v.name, v.architecture, version_key(v.version)))
    return dropped


def _targets_of(targets: Targets, dropped: set[Version]) -> list[str]:
    """The target paths of the dropped versions: bundles and their indexes."""
    paths = set()
    for path, target in targets.targets.items():
        if _bundle_version(target) in dropped:
            paths.add(path)
            keel: dict[str, Any] = target.unrecognized_fields["custom"]["keel"]
            if isinstance(keel.get("index"), str):
                paths.add(keel["index"])
        elif _index_version(target) in dropped:
            paths.add(path)
    return sorted(path for path in paths if path in targets.targets)


def _needed_chunks(repo: Repository, remaining: dict[str, TargetFile]) -> set[bytes]:
    """Every chunk a remaining index names. An index that cannot be read stops the
    prune before anything changes: which chunks it needs is then unknown."""
    needed: set[bytes] = set()
    for path, target in sorted(remaining.items()):
        if indexes.indexed_version(target) is None:
            continue
        data = indexes.read_stored(repo, target)
        try:
            if data is None:
                raise blockindex.BlockIndexError("its stored file is missing or damaged")
            index = blockindex.decode(data)
        except blockindex.BlockIndexError as error:
            raise KeelError(
                f"cannot tell which chunks {path} needs: {error}",
                hint="publish that version again with --force to rewrite its index; "
                "nothing was pruned",
            ) from None
        for blocks in index.files:
            needed.update(blocks.hashes)
    return needed


def _garbage(repo: Repository, remaining: dict[str, TargetFile], needed: set[bytes]) -> list[Path]:
    """Files nothing remaining names: stored targets of no target, chunks of no index,
    and temporaries (under the lock no publish is writing any)."""
    stored = {repo.stored_target(target) for target in remaining.values()}
    found = []
    if repo.targets_dir.is_dir():
        found += [
            path
            for path in sorted(repo.targets_dir.rglob("*"))
            if path.is_file() and path not in stored
        ]
    for path in chunkstore.ChunkStore(repo.path).files():
        if chunkstore.chunk_digest(path.name) not in needed:
            found.append(path)
    return found


def prune(
    repo_dir: Path, key_dir: Path, keep: int, *, dry_run: bool = False, now: datetime | None = None
) -> Pruned:
    """Keep the newest keep versions of each image and architecture in the repository;
    drop the others from the signed metadata, then delete every file that nothing kept
    needs. dry_run: work out the same, change nothing."""
    if keep < 1:
        raise KeelError(
            f"--keep {keep} would leave no version to update to",
            hint="keep at least 1: the newest version of each image",
        )
    repo = Repository(repo_dir)
    if not repo.exists():
        raise KeelError(
            f"{repo_dir} is not an update repository (no metadata/root.json)",
            hint="give the --repo folder `keel publish` writes to",
        )
    pruned = Pruned(dry_run)
    with repo.locked():
        state = load_state(repo)
        targets = state.targets.signed
        dropped = _choose(targets, keep, pruned)
        pruned.targets = _targets_of(targets, dropped)
        remaining = {p: t for p, t in targets.targets.items() if p not in pruned.targets}
        needed = _needed_chunks(repo, remaining)
        if pruned.targets and not dry_run:
            root = repo.root()
            keys.settle_rotation(key_dir, root.signed)
            signers = publishing_signers(key_dir, root.signed, renew_root=False)
            for target_path in pruned.targets:
                del targets.targets[target_path]
            sign_top_level(repo, state, signers, DEFAULT_EXPIRIES, now or datetime.now(UTC))
            pruned.targets_version = targets.version
        for path in _garbage(repo, remaining, needed):
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
            pruned.files.append(path)
            pruned.bytes_freed += size
            pruned.chunks += int(path.is_relative_to(repo.path / blockindex.CHUNK_FOLDER))
    return pruned
