"""The unified kernel image: sections where systemd-stub looks for them, the same bytes
from the same inputs, a command line that boots either slot, and Secure Boot signing
that only the owner's db certificate verifies."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from composer.build import uki
from composer.publish import secureboot
from hostd.formats.pe import PeHeader, read_header
from tests.unit.composer.build.stubs import HOST_STUB, KERNEL_RELEASE, make_uki

# The values of trixie's systemd 257 stub (objdump -p).
TRIXIE_LIKE = PeHeader(0x14DF90000, 0x1000, 0x1B000, (0, 0))


def sections(efi: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size) from objdump -h."""
    text = subprocess.run(["objdump", "-h", efi], capture_output=True, text=True, check=True)
    found = {}
    for match in re.finditer(r"^\s*\d+\s+(\.\w+)\s+([0-9a-f]+)\s+([0-9a-f]+)", text.stdout, re.M):
        found[match[1]] = (int(match[3], 16), int(match[2], 16))
    return found


def make(tmp_path: Path, cmdline: str = "root=/dev/mapper/keel-root ro", name: str = "keel.efi") -> Path:
    return make_uki(tmp_path / name, cmdline=cmdline)


def test_sections_follow_the_stub_page_aligned_with_the_kernel_last(tmp_path: Path) -> None:
    efi = make(tmp_path)
    found = sections(efi)
    stub_end = max(address + size for name, (address, size) in sections(HOST_STUB).items())
    added = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    addresses = [found[name][0] for name in added]
    assert addresses == sorted(addresses)
    assert addresses[0] >= stub_end
    assert all(address % uki.PAGE == 0 for address in addresses)
    for earlier, later in zip(added, added[1:], strict=False):
        assert found[earlier][0] + found[earlier][1] <= found[later][0]


def test_layout_is_absolute_for_a_stub_with_an_image_base() -> None:
    """systemd 254+ stubs have a non-zero image base; objcopy takes absolute addresses,
    and relative ones land below the image ("section below image base")."""
    files = [(".osrel", Path("/usr/lib/os-release")), (".linux", Path("/usr/lib/os-release"))]
    placed = uki.section_layout(TRIXIE_LIKE, files)
    assert placed[0][2] == 0x14DF90000 + 0x1B000
    assert placed[1][2] == placed[0][2] + uki.PAGE  # os-release is under a page


def test_sections_hold_the_inputs(tmp_path: Path) -> None:
    efi = make(tmp_path, cmdline="root=/dev/mapper/keel-root rootfstype=erofs ro quiet")
    assert uki.dump_section(efi, ".cmdline", tmp_path / "c").read_text() == (
        "root=/dev/mapper/keel-root rootfstype=erofs ro quiet"
    )
    initrd = uki.dump_section(efi, ".initrd", tmp_path / "i").read_bytes()
    assert initrd == (tmp_path / "keel.efi.initrd").read_bytes()
    assert uki.dump_section(efi, ".uname", tmp_path / "u").read_text() == KERNEL_RELEASE


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = make(tmp_path, name="one.efi").read_bytes()
    second = make(tmp_path, name="two.efi").read_bytes()
    assert first == second
    assert make(tmp_path, cmdline="ro other", name="three.efi").read_bytes() != first


def test_the_signed_command_line_names_no_slot() -> None:
    """One UKI boots from either slot: root is the verity device, no keel.slot=."""
    words = uki.uki_cmdline(("console=ttyS0", "keel.verity=ab:12:cd"), verity=True).split()
    assert words[0] == "root=/dev/mapper/keel-root"
    assert not [w for w in words if w.startswith(("keel.slot=", "root=PARTLABEL"))]
    assert words[-1] == "keel.verity=ab:12:cd"
    assert "root=" not in uki.uki_cmdline(("console=ttyS0",), verity=False)


def test_signed_image_verifies_only_with_the_owners_db_certificate(tmp_path: Path) -> None:
    keys = secureboot.generate(tmp_path / "keys", "Test owner")
    other = secureboot.generate(tmp_path / "other", "Someone else")
    efi = make(tmp_path)
    uki.sign(efi, keys)

    def verifies(cert: Path) -> bool:
        return subprocess.run(["sbverify", "--cert", cert, efi], capture_output=True).returncode == 0

    assert verifies(keys.db_cert)
    assert not verifies(other.db_cert)
    assert not verifies(keys.certificate("KEK"))
    # The sections survive signing (the signature is appended, not woven in).
    assert uki.dump_section(efi, ".cmdline", tmp_path / "c").read_text().startswith("root=")


def test_a_missing_stub_is_named(tmp_path: Path) -> None:
    ctx = type("Ctx", (), {"tree": tmp_path, "definition": type("D", (), {"source": "x.yaml"})()})
    with pytest.raises(Exception, match="systemd-boot-efi"):
        uki.step(ctx)  # type: ignore[arg-type]


def test_the_stubs_header_is_read_as_objdump_shows_it() -> None:
    shown = subprocess.run(["objdump", "-p", HOST_STUB], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"^(ImageBase|SectionAlignment|SizeOfImage)\s+([0-9a-f]+)$", shown, re.M))
    with HOST_STUB.open("rb") as handle:
        header = read_header(handle)
    assert header.image_base == int(fields["ImageBase"], 16)
    assert header.section_alignment == int(fields["SectionAlignment"], 16)
    assert header.size_of_image == int(fields["SizeOfImage"], 16)
    assert header.certificates == (0, 0)  # Debian's stub package is unsigned
