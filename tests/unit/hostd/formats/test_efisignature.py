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
from hostd.formats import efisignature
from tests.unit.composer.build.stubs import HOST_STUB

OWNER = "9a0d4c3e-1111-4bb4-9f5a-6b656c746573"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(owner's key folder, someone else's)."""
    root = tmp_path_factory.mktemp("keys")
    secureboot.generate(root / "owner", "Owner")
    secureboot.generate(root / "other", "Someone else")
    return root / "owner/secure-boot", root / "other/secure-boot"


def unsigned_uki(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vmlinuz").write_bytes(b"MZ kernel stand-in" * 1000)
    (tmp_path / "initrd.img").write_bytes(b"initrd stand-in" * 1000)
    return uki.assemble(
        HOST_STUB,
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        os_release=Path("/usr/lib/os-release"),
        kernel_release="6.12.0-test",
        cmdline="ro",
        out=tmp_path / "keel.efi",
    )


def db_variable(*certificates: Path) -> bytes:
    """db as efivarfs shows it: 4 attribute bytes, then the signature lists."""
    db = EfiSigDB()
    for cert in certificates:
        db.add_cert(OWNER, str(cert))
    return struct.pack("<I", 0x27) + bytes(db)


def test_db_certificates_are_read_from_the_variable(keys: tuple[Path, Path]) -> None:
    owner, other = keys
    found = efisignature.db_certificates(db_variable(owner / "db.crt", other / "db.crt"))
    assert len(found) == 2
    assert found[0][:2] == b"\x30\x82"  # DER: a SEQUENCE with a two-byte length
    assert efisignature.db_certificates(b"\x27\0\0\0") == []
    assert efisignature.db_certificates(b"\x27\0\0\0" + b"\xff" * 40) == []  # garbage


def test_an_image_signed_with_the_owners_db_key_would_start(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    owner, other = keys
    efi = unsigned_uki(tmp_path)
    assert efisignature.signatures(efi.open("rb")) == []
    db = efisignature.db_certificates(db_variable(owner / "db.crt"))
    assert not efisignature.signed_by_one_of(efi.open("rb"), db)
    uki.sign(efi, owner / "db.key", owner / "db.crt")
    assert len(efisignature.signatures(efi.open("rb"))) == 1
    assert efisignature.signed_by_one_of(efi.open("rb"), db)
    # Another owner's db, or only the owner's KEK, would not let it start.
    assert not efisignature.signed_by_one_of(
        efi.open("rb"), efisignature.db_certificates(db_variable(other / "db.crt"))
    )
    assert not efisignature.signed_by_one_of(
        efi.open("rb"), efisignature.db_certificates(db_variable(owner / "KEK.crt"))
    )


def test_what_is_no_pe_image_is_named(tmp_path: Path) -> None:
    with pytest.raises(efisignature.SignatureError, match="no MZ header"):
        efisignature.signatures(io.BytesIO(b"\x7fELF" + b"\0" * 100))
    with pytest.raises(efisignature.SignatureError, match="ends before"):
        efisignature.signatures(io.BytesIO(b"MZ"))


def test_under_secure_boot_hostd_refuses_what_the_firmware_would_not_start(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """Installed, it would stop the machine in the firmware, before any counter or
    rollback could act; so it is refused before the slot is touched."""
    from tests.unit.hostd.hosts import entries, make_host

    owner, other = keys
    host = make_host(tmp_path / "host")
    host.updater.paths.secure_boot = lambda: True
    host.updater.paths.firmware_db = lambda: db_variable(owner / "db.crt")
    slot_b = host.slot_digest("b")

    foreign = unsigned_uki(tmp_path / "foreign")
    uki.sign(foreign, other / "db.key", other / "db.crt")
    host.publish("2.0.0", uki=foreign.read_bytes())
    with pytest.raises(Exception, match="not in this machine's db"):
        host.updater.update()
    assert host.slot_digest("b") == slot_b
    assert host.updater.status()["last_result"]["result"] == "refused"

    signed = unsigned_uki(tmp_path / "signed")
    uki.sign(signed, owner / "db.key", owner / "db.crt")
    host.publish("2.1.0", uki=signed.read_bytes())
    assert host.updater.update()["result"] == "installed"
    assert (host.root / "esp/keel/b/keel.efi").read_bytes() == signed.read_bytes()
    assert "keel-2.1.0-b+3.conf" in entries(host)
