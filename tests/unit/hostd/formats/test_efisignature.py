"""Would the firmware start it: real UKIs signed by sbsign, and a db variable written
by virt-firmware (an implementation of EFI signature lists other than hostd's)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from virt.firmware.efi.siglist import EfiSigDB

from composer.build import uki
from composer.publish import secureboot
from composer.publish.secureboot import SecureBootKeys
from hostd.formats import efisignature
from tests.unit.composer.build.stubs import make_uki

KeyPairs = tuple[SecureBootKeys, SecureBootKeys]
OWNER = "9a0d4c3e-1111-4bb4-9f5a-6b656c746573"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPairs:
    """(the owner's keys, someone else's)."""
    root = tmp_path_factory.mktemp("keys")
    return secureboot.generate(root / "owner", "Owner"), secureboot.generate(root / "other", "X")


def db_variable(*certificates: Path) -> bytes:
    """db as efivarfs shows it: 4 attribute bytes, then the signature lists."""
    db = EfiSigDB()
    for cert in certificates:
        db.add_cert(OWNER, str(cert))
    return struct.pack("<I", 0x27) + bytes(db)


def test_db_certificates_are_read_from_the_variable(
    keys: KeyPairs,
) -> None:
    owner, other = keys
    found = efisignature.db_certificates(db_variable(owner.db_cert, other.db_cert))
    assert len(found) == 2
    assert found[0][:2] == b"\x30\x82"  # DER: a SEQUENCE with a two-byte length
    assert efisignature.db_certificates(b"\x27\0\0\0") == []
    assert efisignature.db_certificates(b"\x27\0\0\0" + b"\xff" * 40) == []  # garbage


def test_an_image_signed_with_the_owners_db_key_would_start(tmp_path: Path, keys: KeyPairs) -> None:
    owner, other = keys
    efi = make_uki(tmp_path / "keel.efi")
    assert efisignature.signatures(efi.open("rb")) == []
    db = efisignature.db_certificates(db_variable(owner.db_cert))
    assert not efisignature.signed_by_one_of(efi.open("rb"), db)
    uki.sign(efi, owner)
    assert len(efisignature.signatures(efi.open("rb"))) == 1
    assert efisignature.signed_by_one_of(efi.open("rb"), db)
    # Another owner's db, or only the owner's KEK, would not let it start.
    assert not efisignature.signed_by_one_of(
        efi.open("rb"), efisignature.db_certificates(db_variable(other.db_cert))
    )
    assert not efisignature.signed_by_one_of(
        efi.open("rb"), efisignature.db_certificates(db_variable(owner.certificate("KEK")))
    )


def test_what_is_no_pe_image_is_named(tmp_path: Path) -> None:
    with pytest.raises(efisignature.SignatureError, match="no MZ header"):
        efisignature.signatures(io.BytesIO(b"\x7fELF" + b"\0" * 100))
    with pytest.raises(efisignature.SignatureError, match="ends before"):
        efisignature.signatures(io.BytesIO(b"MZ"))


def test_under_secure_boot_hostd_refuses_what_the_firmware_would_not_start(
    tmp_path: Path, keys: KeyPairs
) -> None:
    """Installed, it would stop the machine in the firmware, before any counter or
    rollback could act; so it is refused before the slot is touched."""
    from tests.unit.hostd.hosts import entries, make_host

    owner, other = keys
    host = make_host(tmp_path / "host")
    host.updater.paths.secure_boot = lambda: True
    host.updater.paths.firmware_db = lambda: db_variable(owner.db_cert)
    slot_b = host.slot_digest("b")

    foreign = make_uki(tmp_path / "foreign.efi")
    uki.sign(foreign, other)
    host.publish("2.0.0", uki=foreign.read_bytes())
    with pytest.raises(Exception, match="not in this machine's db"):
        host.updater.update()
    assert host.slot_digest("b") == slot_b
    assert host.updater.status()["last_result"]["result"] == "refused"

    signed = make_uki(tmp_path / "signed.efi")
    uki.sign(signed, owner)
    host.publish("2.1.0", uki=signed.read_bytes())
    assert host.updater.update()["result"] == "installed"
    assert (host.root / "esp/keel/b/keel.efi").read_bytes() == signed.read_bytes()
    assert "keel-2.1.0-b+3.conf" in entries(host)
