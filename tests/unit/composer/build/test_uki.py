"""The unified kernel image: sections where systemd-stub looks for them, the same bytes
from the same inputs, a command line that boots either slot, and Secure Boot signing
that only the owner's db certificate verifies."""

from __future__ import annotations

import hashlib
import itertools
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


def make(
    tmp_path: Path, cmdline: str = "root=/dev/mapper/keel-root ro", name: str = "keel.efi"
) -> Path:
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
    for earlier, later in itertools.pairwise(added):
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
        return (
            subprocess.run(["sbverify", "--cert", cert, efi], capture_output=True).returncode == 0
        )

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
    fields = dict(
        re.findall(r"^(ImageBase|SectionAlignment|SizeOfImage)\s+([0-9a-f]+)$", shown, re.M)
    )
    with HOST_STUB.open("rb") as handle:
        header = read_header(handle)
    assert header.image_base == int(fields["ImageBase"], 16)
    assert header.section_alignment == int(fields["SectionAlignment"], 16)
    assert header.size_of_image == int(fields["SizeOfImage"], 16)
    assert header.certificates == (0, 0)  # Debian's stub package is unsigned


# Delta updates fetch the 4 KiB blocks of keel.efi a host lacks (issue 16): an unchanged
# kernel and initrd must stay the same blocks when the small sections before them change.
BLOCK = 4096


def file_offsets(efi: Path) -> dict[str, tuple[int, int]]:
    """name -> (file offset, size) from objdump -h."""
    text = subprocess.run(["objdump", "-h", efi], capture_output=True, text=True, check=True)
    pattern = r"^\s*\d+\s+(\.\w+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)"
    return {m[1]: (int(m[3], 16), int(m[2], 16)) for m in re.finditer(pattern, text.stdout, re.M)}


def page_aligned_stub(tmp_path: Path) -> Path:
    """The host's stub with trixie's 4 KiB section alignment (systemd 252 declares 512)."""
    stub = tmp_path / "stub-4k.efi"
    subprocess.run(["objcopy", "--section-alignment", str(BLOCK), HOST_STUB, stub], check=True)
    return stub


def stand_in(seed: str, size: int) -> bytes:
    """Bytes with no two 4 KiB blocks alike, so a block can only match its own copy."""
    chunks = (hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(chunks)[:size]


def uki_from(stub: Path, tmp_path: Path, name: str, *, cmdline: str, os_release: str) -> Path:
    parts = tmp_path / f"{name}.parts"
    parts.mkdir()
    (parts / "vmlinuz").write_bytes(b"MZ" + stand_in("kernel", 70_001))
    (parts / "initrd").write_bytes(stand_in("initrd", 50_003))
    (parts / "os-release").write_text(os_release)
    return uki.assemble(
        stub,
        kernel=parts / "vmlinuz",
        initrd=parts / "initrd",
        os_release=parts / "os-release",
        kernel_release=KERNEL_RELEASE,
        cmdline=cmdline,
        out=tmp_path / f"{name}.efi",
    )


def section_blocks(efi: Path, name: str) -> list[bytes]:
    offset, size = file_offsets(efi)[name]
    data = efi.read_bytes()
    end = -(-(offset + size) // BLOCK) * BLOCK  # the last block with its padding
    return [data[i : i + BLOCK] for i in range(offset, end, BLOCK)]


def two_versions(stub: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The same kernel and initrd; a command line 1.5 KiB longer and another os-release."""
    first = uki_from(stub, tmp_path, "v1", cmdline="ro quiet", os_release='VERSION="1.0.0"\n')
    second = uki_from(
        stub, tmp_path, "v2", cmdline="ro quiet " + "x=1 " * 384, os_release='VERSION="1.0.10"\n'
    )
    return first, second


def test_every_section_starts_on_a_page_in_the_file(tmp_path: Path) -> None:
    first, second = two_versions(page_aligned_stub(tmp_path), tmp_path)
    for efi in (first, second):
        offsets = file_offsets(efi)
        added = [offsets[name][0] for name in (".osrel", ".cmdline", ".uname", ".initrd", ".linux")]
        assert all(offset % BLOCK == 0 for offset in added), offsets


def test_an_unchanged_kernel_and_initrd_keep_their_blocks(tmp_path: Path) -> None:
    first, second = two_versions(page_aligned_stub(tmp_path), tmp_path)
    assert file_offsets(second)[".cmdline"][1] - file_offsets(first)[".cmdline"][1] > 1536
    data = first.read_bytes()
    old_blocks = {data[i : i + BLOCK] for i in range(0, len(data), BLOCK)}
    for name in (".initrd", ".linux"):
        assert section_blocks(first, name) == section_blocks(second, name)
        assert all(block in old_blocks for block in section_blocks(second, name))


def test_a_stub_with_512_byte_sections_keeps_its_file_alignment(tmp_path: Path) -> None:
    """PE: the file alignment may not exceed the section alignment. With 512 bytes the
    initrd moves when the command line grows (what the page alignment prevents)."""
    first, second = two_versions(HOST_STUB, tmp_path)
    shown = subprocess.run(["objdump", "-p", second], capture_output=True, text=True).stdout
    assert re.search(r"^FileAlignment\s+0*200$", shown, re.M)
    assert file_offsets(first)[".initrd"][0] != file_offsets(second)[".initrd"][0]


def test_a_page_aligned_uki_is_signed_and_read_back(tmp_path: Path) -> None:
    first, _ = two_versions(page_aligned_stub(tmp_path), tmp_path)
    keys = secureboot.generate(tmp_path / "keys", "Test owner")
    uki.sign(first, keys)
    checked = subprocess.run(["sbverify", "--cert", keys.db_cert, first], capture_output=True)
    assert checked.returncode == 0, checked.stderr
    initrd = uki.dump_section(first, ".initrd", tmp_path / "i").read_bytes()
    assert initrd == (tmp_path / "v1.parts/initrd").read_bytes()
    assert file_offsets(first)[".linux"][0] % BLOCK == 0
