"""`keel keygen --secure-boot`: the owner's PK, KEK and db keys and certificates."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from composer.cli import main
from composer.core.errors import KeelError
from composer.publish import secureboot


def test_three_key_pairs_each_self_signed_and_named_for_the_owner(tmp_path: Path) -> None:
    keys = secureboot.generate(tmp_path, "Acme fleet")
    uuid.UUID(keys.owner_guid)
    assert (keys.folder / "owner.guid").read_text().strip() == keys.owner_guid
    assert stat.S_IMODE(keys.folder.stat().st_mode) == 0o700
    seen = set()
    for name in ("PK", "KEK", "db"):
        private = load_pem_private_key(keys.key(name).read_bytes(), password=None)
        assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
        assert stat.S_IMODE(keys.key(name).stat().st_mode) == 0o600
        certificate = x509.load_pem_x509_certificate(keys.certificate(name).read_bytes())
        assert certificate.subject.rfc4514_string() == f"CN=Acme fleet {name}"
        assert certificate.issuer == certificate.subject
        assert certificate.public_key() == private.public_key()
        # Self-signed: the certificate's own key verifies its signature.
        public = certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert certificate.signature_hash_algorithm is not None
        public.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes,
            padding.PKCS1v15(),
            certificate.signature_hash_algorithm,
        )
        assert certificate.signature_hash_algorithm.name == "sha256"
        seen.add(certificate.public_key().public_numbers().n)
    assert len(seen) == 3  # three different keys


def test_existing_keys_are_never_overwritten(tmp_path: Path) -> None:
    first = secureboot.generate(tmp_path, "Keel")
    before = first.key("db").read_bytes()
    with pytest.raises(KeelError, match="refusing to overwrite the Secure Boot keys"):
        secureboot.generate(tmp_path, "Keel")
    assert first.key("db").read_bytes() == before


def test_keygen_adds_secure_boot_keys_beside_existing_update_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out)]) == 0
    root = (out / "root.json").read_bytes()
    assert not (out / "secure-boot").exists()
    assert main(["keygen", "--out", str(out), "--secure-boot", "--owner", "Lab"]) == 0
    assert (out / "root.json").read_bytes() == root  # the update keys stay as they were
    certificate = x509.load_pem_x509_certificate((out / "secure-boot/db.crt").read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=Lab db"
    assert "enroll the .crt files" in capsys.readouterr().err


def test_keygen_makes_both_sets_in_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out), "--secure-boot"]) == 0
    assert (out / "root.json").is_file() and (out / "targets.pem").is_file()
    assert sorted(p.name for p in (out / "secure-boot").iterdir()) == [
        "KEK.crt", "KEK.key", "PK.crt", "PK.key", "db.crt", "db.key", "owner.guid",
    ]  # fmt: skip
