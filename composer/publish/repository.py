"""An update repository: plain static files laid out the way TUF clients expect.

    metadata/1.root.json, root.json        root metadata (root.json: the newest)
    metadata/N.targets.json                which bundles exist, their length and sha256
    metadata/N.snapshot.json               which targets metadata version is current
    metadata/timestamp.json                which snapshot is current; short-lived
    targets/NAME/ARCH/SHA256.FILE          the bundles and their block indexes, named
                                           by content (composer/publish/indexes.py)
    chunks/AB/SHA256.z                     every block of every version, stored once
                                           (composer/publish/chunkstore.py)

Consistent snapshots: every file but timestamp.json is written under a new name and
never changed afterwards, and timestamp.json is replaced last, so a client that reads
while `keel publish` runs sees either the old repository or the new one, never a mix.
Every write goes to a temporary file first and is renamed into place."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from composer.build import bundle
from composer.build.manifest import sha256_file
from composer.core.errors import KeelError
from composer.core.files import copy_atomically, write_atomically
from composer.core.progress import Progress
from composer.publish import indexes, keys
from hostd.formats.duration import DurationError, parse_signed_duration
from hostd.formats.version import version_key as shared_version_key

DEFAULT_EXPIRIES: dict[str, timedelta] = {
    "root": keys.ROOT_LIFETIME,
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}


def parse_duration(text: str) -> timedelta:
    """'90d', '12h', '0s', '-1h': zero or negative make metadata that is already expired."""
    try:
        return parse_signed_duration(text)
    except DurationError:
        raise KeelError(
            f"not a duration: {text!r}",
            hint="write a whole number and one of s, min (or m), h, d, w; a minus for the past",
        ) from None


def parse_rollout(text: str) -> timedelta:
    """'24h' -> 1 day, for --rollout: a span longer than zero."""
    span = parse_duration(text)
    if span <= timedelta(0):
        raise KeelError(f"a rollout of {text} is no rollout", hint="give a span such as 24h")
    return span


def parse_expiry(text: str) -> tuple[str, timedelta]:
    """'timestamp=1d' -> ('timestamp', 1 day), for --expires."""
    role, sep, duration = text.partition("=")
    if not sep or role not in keys.ROLES:
        raise KeelError(
            f"not an expiry: {text!r}",
            hint=f"write ROLE=DURATION, ROLE one of {', '.join(keys.ROLES)}",
        )
    return role, parse_duration(duration)


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key of an image version: the order hostd uses too (hostd/version.py)."""
    try:
        return shared_version_key(version)
    except ValueError as error:
        raise KeelError(str(error)) from None


def target_path(info: bundle.BundleInfo) -> str:
    """The bundle's name in targets metadata; clients look it up by this path."""
    file_name = bundle.bundle_file_name(info.name, info.version, info.architecture)
    return f"{info.name}/{info.architecture}/{file_name}"


def target_custom(
    info: bundle.BundleInfo,
    rollout: tuple[datetime, timedelta] | None = None,
    index: str | None = None,
) -> dict[str, Any]:
    """custom of a bundle target; index: the target path of its block index."""
    keel: dict[str, Any] = {
        "name": info.name,
        "version": info.version,
        "architecture": info.architecture,
        "kernel_version": info.kernel_version,
    }
    if index is not None:
        keel["index"] = index
    if rollout is not None:
        start, span = rollout
        # Whole seconds, as hostd/rollout.py reads them.
        keel["rollout"] = {"start": int(start.timestamp()), "duration": int(span.total_seconds())}
    return {"keel": keel}


def halt(targets: Targets, version: str) -> list[str]:
    """Mark every target of version halted (hostd/rollout.py); the paths marked."""
    marked = []
    for path, target in targets.targets.items():
        keel = (target.unrecognized_fields.get("custom") or {}).get("keel")
        if isinstance(keel, dict) and keel.get("version") == version:
            keel["halted"] = True
            marked.append(path)
    if not marked:
        raise KeelError(
            f"no published target has version {version}",
            hint="`keel publish --halt` names a version already in the repository",
        )
    return sorted(marked)


def find_bundle(artifact: Path) -> Path:
    """A .keelbundle file, or the one in a build output folder's bundle/."""
    if artifact.is_file():
        return artifact
    if artifact.is_dir():
        found = sorted((artifact / "bundle").glob(f"*{bundle.BUNDLE_SUFFIX}"))
        if len(found) == 1:
            return found[0]
        raise KeelError(
            f"{artifact}: expected one bundle in {artifact / 'bundle'}, found {len(found)}",
            hint="pass the .keelbundle file itself, or a folder `keel build` wrote",
        )
    raise KeelError(f"{artifact}: no such file or folder")


@dataclass(frozen=True)
class Published:
    target_path: str | None  # None: metadata re-signed, no bundle added
    stored_at: Path | None
    version: str | None
    index: indexes.AddedIndex | None  # the bundle's block index and its chunks
    targets_version: int
    snapshot_version: int
    timestamp_version: int


class Repository:
    """The files of one repository, read and written through TUF's Metadata API."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"

    def exists(self) -> bool:
        return (self.metadata_dir / "root.json").is_file()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One publisher at a time: two would both take the same next version numbers."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".publish.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def create(self, root_metadata: Path) -> None:
        root = keys.load_root(root_metadata)
        data = root_metadata.read_bytes()
        write_atomically(self.metadata_dir / f"{root.signed.version}.root.json", data)
        write_atomically(self.metadata_dir / "root.json", data)

    def root(self) -> Metadata[Root]:
        return keys.load_root(self.metadata_dir / "root.json")

    def _read(self, filename: str, role: type[Signed]) -> Metadata[Any]:
        path = self.metadata_dir / filename
        metadata: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
        if not isinstance(metadata.signed, role):
            raise KeelError(f"{path} is not {role.type} metadata")
        return metadata

    def current(self) -> tuple[Metadata[Timestamp], Metadata[Snapshot], Metadata[Targets]] | None:
        """The published state, found the way a client finds it: from timestamp.json."""
        if not (self.metadata_dir / "timestamp.json").exists():
            return None
        timestamp: Metadata[Timestamp] = self._read("timestamp.json", Timestamp)
        snapshot_version = timestamp.signed.snapshot_meta.version
        snapshot: Metadata[Snapshot] = self._read(f"{snapshot_version}.snapshot.json", Snapshot)
        targets_version = snapshot.signed.meta["targets.json"].version
        targets: Metadata[Targets] = self._read(f"{targets_version}.targets.json", Targets)
        return timestamp, snapshot, targets

    def write(self, metadata: Metadata[Any], *, versioned: bool) -> bytes:
        data = metadata.to_bytes(JSONSerializer(compact=False))
        role = metadata.signed.type
        name = f"{metadata.signed.version}.{role}.json" if versioned else f"{role}.json"
        write_atomically(self.metadata_dir / name, data)
        return data

    def stored_target(self, target: TargetFile) -> Path:
        """Where a target's bytes live: prefixed with their sha256 (consistent snapshot)."""
        return self.targets_dir / target.get_prefixed_paths()[0]


def newest_version(targets: Targets, name: str, architecture: str) -> str | None:
    versions = [
        target.custom["keel"]["version"]
        for target in targets.targets.values()
        if isinstance(target.custom, dict)
        and target.custom.get("keel", {}).get("name") == name
        and target.custom.get("keel", {}).get("architecture") == architecture
    ]
    return max(versions, key=version_key, default=None)


def _sign(metadata: Metadata[Any], signer: Signer, expires: datetime, *, first: bool) -> None:
    """Sign a new version of metadata (version 1 if it is the first one)."""
    if not first:
        metadata.signed.version += 1
    metadata.signed.expires = expires
    metadata.sign(signer)


@dataclass
class State:
    """The metadata being changed by one publish, and whether it is the first."""

    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]
    first: bool


def load_state(repo: Repository) -> State:
    current = repo.current()
    if current is None:
        return State(
            Metadata(Timestamp()), Metadata(Snapshot(meta={})), Metadata(Targets()), first=True
        )
    return State(*current, first=False)


def _check_newer(targets: Targets, info: bundle.BundleInfo, repo_dir: Path) -> None:
    newest = newest_version(targets, info.name, info.architecture)
    if newest is not None and version_key(info.version) <= version_key(newest):
        raise KeelError(
            f"{info.name} {info.version} ({info.architecture}) is not newer than "
            f"{newest}, the newest version in {repo_dir}",
            hint="raise `version` in the image definition and build again, "
            "or pass --force to publish it anyway",
        )


def _add_target(
    repo: Repository,
    targets: Targets,
    source: Path,
    info: bundle.BundleInfo,
    rollout: tuple[datetime, timedelta] | None,
    progress: Progress,
) -> tuple[Path, indexes.AddedIndex]:
    """Store the bundle, its chunks and its index, and add both targets."""
    with source.open("rb") as handle:
        target = TargetFile.from_data(target_path(info), handle, ["sha256"])
    index = indexes.add_index(repo, targets, target, source, info, progress)
    target.unrecognized_fields["custom"] = target_custom(info, rollout, index.target_path)
    stored = repo.stored_target(target)
    # Named by content: an existing file is the same bundle, unless it was damaged.
    if not stored.exists() or sha256_file(stored) != target.hashes["sha256"]:
        copy_atomically(source, stored)
    targets.targets[target.path] = target
    return stored, index


def sign_top_level(
    repo: Repository,
    state: State,
    signers: Mapping[str, Signer],
    lifetimes: Mapping[str, timedelta],
    issued: datetime,
) -> None:
    # Order matters: each file is in place before the one that points to it.
    targets, snapshot, timestamp = state.targets, state.snapshot, state.timestamp
    _sign(targets, signers["targets"], issued + lifetimes["targets"], first=state.first)
    targets_bytes = repo.write(targets, versioned=True)
    snapshot.signed.meta["targets.json"] = MetaFile.from_data(
        targets.signed.version, targets_bytes, ["sha256"]
    )
    _sign(snapshot, signers["snapshot"], issued + lifetimes["snapshot"], first=state.first)
    snapshot_bytes = repo.write(snapshot, versioned=True)
    timestamp.signed.snapshot_meta = MetaFile.from_data(
        snapshot.signed.version, snapshot_bytes, ["sha256"]
    )
    _sign(timestamp, signers["timestamp"], issued + lifetimes["timestamp"], first=state.first)
    repo.write(timestamp, versioned=False)


def publishing_signers(key_dir: Path, root: Root, *, renew_root: bool) -> dict[str, Signer]:
    """The keys a publish signs with. Root only when root metadata is renewed, so the
    root key can stay offline; all are loaded before anything is written."""
    signers: dict[str, Signer] = {
        role: keys.load_signer(key_dir, role, root) for role in keys.PUBLISHING_ROLES
    }
    if renew_root:
        signers["root"] = keys.load_root_signer(
            key_dir, root, needed_for="renewing root metadata (--expires root=...)"
        )
    return signers


def publish(
    repo_dir: Path,
    artifact: Path | None,
    key_dir: Path,
    *,
    expiries: Mapping[str, timedelta] | None = None,
    force: bool = False,
    now: datetime | None = None,
    rollout: timedelta | None = None,
    halt_version: str | None = None,
    progress: Progress | None = None,
) -> Published:
    """Add the bundle to the repository (created from key_dir/root.json on first use),
    sign new targets, snapshot and timestamp metadata, and return what was written.

    artifact: a build output folder or a bundle; None only re-signs the metadata with
    fresh expiry dates (timestamp metadata lives a day: re-sign at least that often).
    expiries: per role, how long the new metadata stays valid (DEFAULT_EXPIRIES for the
    rest). Giving one for root also re-signs root as a new version with that expiry.
    force: publish even if the version is not newer than the newest published one.
    rollout: spread the new version over this span, from now (hostd/rollout.py).
    halt_version: mark that published version halted: hosts that have not booted it
    stop taking it, and drop it if installed but not booted.
    progress: where the long step (storing the chunks) reports; quiet by default."""
    lifetimes = {**DEFAULT_EXPIRIES, **(expiries or {})}
    issued = now or datetime.now(UTC)
    source = find_bundle(artifact) if artifact is not None else None
    info = bundle.verify_bundle(source) if source is not None else None
    repo = Repository(repo_dir)
    with repo.locked():
        if not repo.exists():
            if info is None:
                raise KeelError(f"{repo_dir} is not an update repository yet: nothing to re-sign")
            repo.create(key_dir / keys.ROOT_METADATA)
        root = repo.root()
        keys.settle_rotation(key_dir, root.signed)
        renew_root = bool(expiries and "root" in expiries)
        signers = publishing_signers(key_dir, root.signed, renew_root=renew_root)
        state = load_state(repo)
        if info is not None and not force:
            _check_newer(state.targets.signed, info, repo_dir)
        if renew_root:
            _sign(root, signers["root"], issued + lifetimes["root"], first=False)
            repo.write(root, versioned=True)
            repo.write(root, versioned=False)
        stored = index = None
        if source is not None and info is not None:
            plan = (issued, rollout) if rollout is not None else None
            stored, index = _add_target(
                repo, state.targets.signed, source, info, plan, progress or Progress(quiet=True)
            )
        if halt_version is not None:
            halt(state.targets.signed, halt_version)
        sign_top_level(repo, state, signers, lifetimes, issued)

    return Published(
        target_path(info) if info else None,
        stored,
        info.version if info else None,
        index,
        state.targets.signed.version,
        state.snapshot.signed.version,
        state.timestamp.signed.version,
    )


@dataclass(frozen=True)
class Rotated:
    role: str
    old_keyid: str
    new_keyid: str
    root_version: int
    retired_key: Path


def rotate_key(repo_dir: Path, key_dir: Path, role: str, *, now: datetime | None = None) -> Rotated:
    """Replace role's signing key: a new root version names the new key instead of the
    old one, and targets, snapshot and timestamp are signed again under it.

    The new root is signed by the root key; a new root key signs together with the old
    one, so hosts that trust the old root accept the new. Hosts follow the chain of root
    versions by themselves. The old private key moves to KEYS/retired/; KEYS/root.json
    becomes the new root, for the images built from now on."""
    if role not in keys.ROLES:
        raise KeelError(f"unknown role {role!r}", hint=f"one of {', '.join(keys.ROLES)}")
    issued = now or datetime.now(UTC)
    repo = Repository(repo_dir)
    with repo.locked():
        if not repo.exists():
            raise KeelError(
                f"{repo_dir} is not an update repository yet",
                hint="`keel publish` a first version before rotating keys",
            )
        root = repo.root()
        keys.settle_rotation(key_dir, root.signed)
        # Every rotation signs a new root version: the one command besides renewing
        # root that needs the offline root key.
        root_signer = keys.load_root_signer(
            key_dir, root.signed, needed_for=f"rotating the {role} key"
        )
        signers: dict[str, Signer] = {"root": root_signer}
        for name in keys.PUBLISHING_ROLES:
            signers[name] = keys.load_signer(key_dir, name, root.signed)
        old, new = signers[role], keys.new_pending_signer(key_dir, role)
        root.signed.revoke_key(old.public_key.keyid, role)
        root.signed.add_key(new.public_key, role)
        root.signed.version += 1
        root.signed.expires = issued + keys.ROOT_LIFETIME
        root.signatures.clear()
        signers[role] = new
        root.sign(signers["root"])
        if role == "root":
            root.sign(old, append=True)  # what hosts trusting the old root check
        data = repo.write(root, versioned=True)
        repo.write(root, versioned=False)
        sign_top_level(repo, load_state(repo), signers, DEFAULT_EXPIRIES, issued)
        keys.settle_rotation(key_dir, root.signed)
        write_atomically(key_dir / keys.ROOT_METADATA, data)
    return Rotated(
        role,
        old.public_key.keyid,
        new.public_key.keyid,
        root.signed.version,
        key_dir / keys.RETIRED_DIR / f"{role}-{old.public_key.keyid[:16]}.pem",
    )
