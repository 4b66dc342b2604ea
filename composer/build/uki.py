"""Build step: the unified kernel image (UKI) a slot boots, one signed EFI file.

systemd-stub (the image's own, from systemd-boot-efi) with the kernel, the initrd,
os-release, the kernel's release and the command line added as PE sections, as
systemd-stub(7) describes. ukify does this on newer systems; the build machine
(Debian 12) has no ukify, so objcopy does it, the way systemd's docs did before
ukify existed, with one correction: systemd 254 and later build the stub with a
non-zero image base, and objcopy takes absolute addresses. So the sections go right
after the stub's last byte in memory (ImageBase + SizeOfImage), each one on the
next section-aligned address, the kernel last (the stub decompresses it in place
and wants room after it). `-p` keeps the stub's PE timestamp: without it objcopy
writes the current time and no two builds would match.

Every section also starts at a 4 KiB-aligned file offset (`--file-alignment`), for
delta updates, which fetch the 4 KiB blocks of keel.efi a host does not have: with the
stub's 512-byte file alignment, a .cmdline or .osrel that grows past a 512-byte step
moves the initrd and the kernel by 512 bytes, and every block of an unchanged 20 MB
kernel and initrd differs. Aligned, they are the same blocks whatever comes before
them; the padding costs about 32 KiB (trixie's stub: 22,068,736 to 22,102,016 bytes).
PE wants the file alignment no larger than the section alignment, so a stub with
smaller sections (systemd 252, bookworm: 512 bytes) keeps its own.

The command line is the one thing the stub trusts under Secure Boot (it ignores the
loader entry's options then), so it must boot either slot: root is the dm-verity
device the initrd opens, and the initrd finds which slot holds this version by the
salt of its verity superblock (scripts/local-top/keel-verity). Without Secure Boot,
the entry's options replace it, as they did before UKIs, so hosts keep their own
kernel arguments."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core import commands
from composer.core.errors import KeelError
from hostd.formats.bootentry import MOUNT_WORDS, VERIFIED_ROOT
from hostd.formats.pe import PeHeader, read_header

if TYPE_CHECKING:
    from composer.build.context import BuildContext
    from composer.publish.secureboot import SecureBootKeys

STUB = "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
OS_RELEASE = "usr/lib/os-release"
PAGE = 4096


def uki_cmdline(cmdline: tuple[str, ...], verity: bool) -> str:
    """The UKI's own command line: what a Secure Boot machine boots with."""
    # Slot-agnostic: without verity no root= at all (the entry's options name it).
    root = (f"root={VERIFIED_ROOT}",) if verity else ()
    return " ".join((*root, *MOUNT_WORDS, *cmdline))


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def section_layout(
    header: PeHeader, sections: list[tuple[str, Path]]
) -> list[tuple[str, Path, int]]:
    """(name, file, absolute address) for each section, in order, after the stub."""
    # At least a page: systemd 252's stub declares 512-byte alignment, and the kernel
    # and initrd are best placed on page boundaries whatever the stub says.
    alignment = max(header.section_alignment, PAGE)
    address = _align(header.image_base + header.size_of_image, alignment)
    placed = []
    for name, path in sections:
        placed.append((name, path, address))
        address = _align(address + path.stat().st_size, alignment)
    return placed


def _file_alignment(header: PeHeader) -> list[str]:
    """objcopy's arguments that put every section at a page-aligned file offset, where
    the stub's section alignment allows it (none otherwise)."""
    if header.section_alignment < PAGE:
        return []
    return ["--file-alignment", str(PAGE)]


def assemble(
    stub: Path,
    *,
    kernel: Path,
    initrd: Path,
    os_release: Path,
    kernel_release: str,
    cmdline: str,
    out: Path,
) -> Path:
    """Write the unsigned UKI to out; the same inputs give the same bytes."""
    work = out.parent / f".{out.name}.parts"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        (work / "cmdline").write_text(cmdline)
        (work / "uname").write_text(kernel_release)
        sections = [
            (".osrel", os_release),
            (".cmdline", work / "cmdline"),
            (".uname", work / "uname"),
            (".initrd", initrd),
            (".linux", kernel),  # last: room to decompress after it
        ]
        with stub.open("rb") as handle:
            header = read_header(handle)
        args: list[str | Path] = ["objcopy", "-p", *_file_alignment(header)]
        for name, path, address in section_layout(header, sections):
            args += [
                "--add-section",
                f"{name}={path}",
                "--change-section-vma",
                f"{name}={address:#x}",
            ]
        args += ["--set-section-flags", ".linux=code,readonly", stub, out]
        commands.run(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def dump_section(efi: Path, name: str, dest: Path) -> Path:
    """Copy one section of a UKI (".initrd", ".cmdline") into dest."""
    scratch = dest.with_name(dest.name + ".rest")
    try:
        commands.run(["objcopy", "--dump-section", f"{name}={dest}", efi, scratch])
    finally:
        scratch.unlink(missing_ok=True)
    return dest


def sign(efi: Path, keys: SecureBootKeys) -> None:
    """Sign an EFI binary in place for Secure Boot with the owner's db key."""
    signed = efi.with_name(efi.name + ".signed")
    commands.run(["sbsign", "--key", keys.db_key, "--cert", keys.db_cert, "--output", signed, efi])
    signed.replace(efi)


def step(ctx: BuildContext) -> None:
    tree = ctx.tree
    stub = tree / STUB
    if not stub.exists():
        raise KeelError(
            f"the image has no systemd-stub at /{STUB}",
            hint=f"add 'systemd-boot-efi' to packages in {ctx.definition.source}",
        )
    final = ctx.finalized
    assemble(
        stub,
        kernel=final.kernel,
        initrd=final.initrd,
        os_release=tree / OS_RELEASE,
        kernel_release=final.kernel_version,
        cmdline=uki_cmdline(ctx.kernel_cmdline, ctx.root_verity is not None),
        out=ctx.uki,
    )
    if ctx.secure_boot_keys is not None:
        sign(ctx.uki, ctx.secure_boot_keys)
