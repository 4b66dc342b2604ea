"""The image owner's UEFI Secure Boot keys: PK, KEK and db, each an RSA key and a
self-signed X.509 certificate, in the secure-boot/ folder beside the TUF keys.

PK (platform key) owns the firmware's key store, KEK may change db, and db's key
signs what the firmware may start (systemd-boot and Keel's unified kernel images).
RSA-2048 and SHA-256, the sizes every firmware accepts (Microsoft's guidance for
Secure Boot keys); the firmware does not check certificate dates, so the validity
only has to outlive the machines. The private keys never go into an image or a
bundle (the build's private-key check refuses them); the certificates are what a
machine's firmware is enrolled with (docs/operations.md), and owner.guid names the
owner of those entries in the firmware's lists."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from composer.core.errors import KeelError

FOLDER = "secure-boot"
KEYS = ("PK", "KEK", "db")
NAMES = {"PK": "platform key", "KEK": "key exchange key", "db": "signature database key"}
OWNER_GUID = "owner.guid"
RSA_BITS = 2048
VALIDITY = timedelta(days=20 * 365)


@dataclass(frozen=True)
class SecureBootKeys:
    folder: Path
    owner_guid: str

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def certificate(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    # db signs what the firmware starts: systemd-boot and the UKIs.
    @property
    def db_key(self) -> Path:
        return self.key("db")

    @property
    def db_cert(self) -> Path:
        return self.certificate("db")


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key, even if one appeared since we looked.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _certificate(key: rsa.RSAPrivateKey, common_name: str, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def generate(key_dir: Path, owner: str, *, now: datetime | None = None) -> SecureBootKeys:
    """PK, KEK and db keys and certificates in key_dir/secure-boot/, named for owner
    (the certificates' common names: "<owner> PK" and so on)."""
    folder = key_dir / FOLDER
    if folder.exists() and any(folder.iterdir()):
        raise KeelError(
            f"refusing to overwrite the Secure Boot keys in {folder}",
            hint="machines enrolled with them would refuse images signed with new ones; "
            "choose another --out, or move the folder away first",
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    issued = now or datetime.now(UTC)
    keys = SecureBootKeys(folder, str(uuid.uuid4()))
    for name in KEYS:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(keys.key(name), pem, 0o600)
        certificate = _certificate(private, f"{owner} {name}", issued)
        _write(keys.certificate(name), certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / OWNER_GUID, f"{keys.owner_guid}\n".encode(), 0o644)
    return keys


def load(key_dir: Path, *, private_keys: bool = True) -> SecureBootKeys | None:
    """The Secure Boot keys in key_dir/secure-boot/, or None if there is no such folder;
    KeelError if it is there but incomplete. private_keys=False: only the certificates
    and owner.guid, as a build leaves them beside its disk (copy_certificates)."""
    folder = key_dir / FOLDER
    if not folder.is_dir():
        return None
    try:
        owner = (folder / OWNER_GUID).read_text().strip()
        uuid.UUID(owner)
    except (OSError, ValueError) as error:
        raise KeelError(
            f"{folder / OWNER_GUID} is missing or not a GUID ({error})",
            hint="`keel keygen --secure-boot` writes the whole folder",
        ) from None
    keys = SecureBootKeys(folder, owner)
    needed = [keys.certificate(name) for name in KEYS]
    if private_keys:
        needed += [keys.key(name) for name in KEYS]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise KeelError(
            f"the Secure Boot keys in {folder} are incomplete: {', '.join(missing)} missing",
            hint="`keel keygen --secure-boot` writes the whole folder",
        )
    return keys


def copy_certificates(keys: SecureBootKeys, dest: Path) -> Path:
    """The public half (certificates and owner GUID) into dest/secure-boot/, for
    enrolling a machine (`keel run --secure-boot`, docs/operations.md)."""
    folder = dest / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in KEYS:
        (folder / f"{name}.crt").write_bytes(keys.certificate(name).read_bytes())
    (folder / OWNER_GUID).write_text(f"{keys.owner_guid}\n")
    return folder
