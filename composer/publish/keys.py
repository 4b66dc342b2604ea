"""Signing keys of an update repository, and its initial TUF root metadata.

One ed25519 key per top-level TUF role, each in its own PKCS#8 PEM file, so an
operator can move the root key offline and keep only the keys publishing signs with
(targets, snapshot, timestamp) on the publishing machine: `keel publish` loads the
root key only to renew root metadata, and `keel rotate-key` always. root.json is
version 1 of the root metadata: images bake it as their root of trust, and `keel
publish` starts a repository from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from composer.core.errors import KeelError

ROLES = ("root", "targets", "snapshot", "timestamp")
# What every publish signs with; root signs only new root metadata.
PUBLISHING_ROLES = ("targets", "snapshot", "timestamp")
ROOT_METADATA = "root.json"
ROOT_LIFETIME = timedelta(days=365)
# Keys replaced by `keel rotate-key` are kept here, never deleted: metadata they signed
# may still have to be checked by someone.
RETIRED_DIR = "retired"


@dataclass(frozen=True)
class KeySet:
    root_metadata: Path
    private_keys: dict[str, Path]


def private_key_path(key_dir: Path, role: str) -> Path:
    return key_dir / f"{role}.pem"


def pending_key_path(key_dir: Path, role: str) -> Path:
    """A rotation's new key, until the root that names it is published."""
    return key_dir / f"{role}.pem.new"


def _write_secret(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite a key, even if one appeared since we looked.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def serialize_metadata(metadata: Metadata[Root]) -> bytes:
    return metadata.to_bytes(JSONSerializer(compact=False))


def generate_keys(key_dir: Path, *, now: datetime | None = None) -> KeySet:
    """Create the four role keys and the signed initial root metadata in key_dir."""
    targets = [private_key_path(key_dir, role) for role in ROLES] + [key_dir / ROOT_METADATA]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise KeelError(
            f"refusing to overwrite existing keys: {', '.join(existing)}",
            hint="choose an empty folder with --out; a lost key cannot be recovered",
        )
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
    issued = now or datetime.now(UTC)
    root = Root(expires=issued + ROOT_LIFETIME, consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    metadata = Metadata(root)
    metadata.sign(signers["root"])
    for role, signer in signers.items():
        _write_secret(private_key_path(key_dir, role), signer.private_bytes)
    (key_dir / ROOT_METADATA).write_bytes(serialize_metadata(metadata))
    return KeySet(
        key_dir / ROOT_METADATA, {role: private_key_path(key_dir, role) for role in ROLES}
    )


def load_root(path: Path) -> Metadata[Root]:
    """Root metadata from path, checked to be a root signed by its own root keys."""
    try:
        metadata = Metadata[Root].from_bytes(path.read_bytes())
    except OSError as error:
        raise KeelError(f"cannot read root metadata {path}: {error.strerror}") from None
    except DeserializationError as error:
        raise KeelError(f"{path} is not TUF metadata: {error}") from None
    if not isinstance(metadata.signed, Root):
        raise KeelError(f"{path} is TUF {metadata.signed.type} metadata, not root metadata")
    try:
        metadata.signed.verify_delegate(Root.type, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as error:
        raise KeelError(
            f"{path}: root metadata is not signed by its own root keys: {error}",
            hint="use the root.json that `keel keygen` wrote, unchanged",
        ) from None
    return metadata


def load_signer(key_dir: Path, role: str, root: Root) -> CryptoSigner:
    """The signer for role from key_dir, refused unless root names its public key."""
    path = private_key_path(key_dir, role)
    signer = _read_signer(path, role)
    if signer.public_key.keyid not in root.roles[role].keyids:
        raise KeelError(
            f"{path} is not a {role} key of this repository "
            f"(key id {signer.public_key.keyid[:16]}…)",
            hint="pass --keys the folder `keel keygen` wrote for this repository",
        )
    return signer


def load_root_signer(key_dir: Path, root: Root, *, needed_for: str) -> CryptoSigner:
    """The root signer, for the few operations that sign root metadata. The root key
    is meant to live offline, so its absence is explained rather than just reported."""
    path = private_key_path(key_dir, "root")
    if not path.exists():
        raise KeelError(
            f"{needed_for} needs the root key, and {path} does not exist",
            hint=f"bring the offline root key back as {path} for this command only; "
            "publishing and re-signing do not need it",
        )
    return load_signer(key_dir, "root", root)


def new_pending_signer(key_dir: Path, role: str) -> CryptoSigner:
    """A fresh key for role, written next to the current one as ROLE.pem.new."""
    signer = CryptoSigner.generate_ed25519()
    _write_secret(pending_key_path(key_dir, role), signer.private_bytes)
    return signer


def settle_rotation(key_dir: Path, root: Root) -> list[str]:
    """Finish or undo a key rotation that stopped half-way; return the roles finished.

    A ROLE.pem.new that the published root names replaces ROLE.pem (which moves to
    retired/); one the root does not name was never trusted by anyone and is removed.
    Run before every use of the keys, so an interrupted `keel rotate-key` costs nothing."""
    finished = []
    for role in ROLES:
        pending = pending_key_path(key_dir, role)
        if not pending.exists():
            continue
        if _read_signer(pending, role).public_key.keyid not in root.roles[role].keyids:
            pending.unlink()
            continue
        current = private_key_path(key_dir, role)
        if current.exists():
            keyid = _read_signer(current, role).public_key.keyid
            retired = key_dir / RETIRED_DIR / f"{role}-{keyid[:16]}.pem"
            retired.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(current, retired)
        os.replace(pending, current)
        finished.append(role)
    return finished


def _read_signer(path: Path, role: str) -> CryptoSigner:
    try:
        private_key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise KeelError(f"cannot read the {role} key {path}: {error.strerror}") from None
    except ValueError as error:
        raise KeelError(f"{path} is not a PEM private key: {error}") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeelError(f"{path} is not an ed25519 key")
    return CryptoSigner(private_key, SSlibKey.from_crypto(private_key.public_key()))
