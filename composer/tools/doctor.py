"""`keel doctor`: which host tools are missing, and which Debian package provides each."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    command: str
    package: str
    needed_for: str


TOOLS = (
    Tool("mmdebstrap", "mmdebstrap", "keel build: root filesystem from Debian packages"),
    Tool("mkfs.erofs", "erofs-utils", "keel build: read-only root filesystem"),
    Tool("mkfs.vfat", "dosfstools", "keel build: EFI System Partition"),
    Tool("mcopy", "mtools", "keel build: files into the ESP without mounting"),
    Tool("mkfs.ext4", "e2fsprogs", "keel build: var partition"),
    Tool("debugfs", "e2fsprogs", "keel build: reproducible var partition timestamps"),
    Tool("sfdisk", "fdisk", "keel build: GPT partition table"),
    Tool("qemu-img", "qemu-utils", "keel build: qcow2 image; keel run: VM overlays"),
    Tool("dpkg-query", "dpkg", "keel build: package list in the manifest"),
    Tool("tar", "tar", "keel build: unpack the cached root tree"),
    Tool("zstd", "zstd", "keel build: compression"),
    Tool("xz", "xz-utils", "keel build: recompress kernel modules (xz to zstd)"),
    Tool("objcopy", "binutils", "keel build: assemble unified kernel images"),
    Tool("sbsign", "sbsigntool", "keel build --keys: sign for Secure Boot"),
    Tool("qemu-system-x86_64", "qemu-system-x86", "keel run: boot, if no VM tools tree"),
    Tool("ssh", "openssh-client", "keel ssh"),
)

FILES = (
    (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), "ovmf", "keel run: UEFI firmware"),
    (
        Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        "ovmf",
        "keel run --secure-boot: UEFI firmware with Secure Boot",
    ),
)


def missing_tools() -> list[tuple[str, str, str]]:
    """(what, Debian package, needed for) for everything absent on this machine."""
    missing = [
        (t.command, t.package, t.needed_for) for t in TOOLS if shutil.which(t.command) is None
    ]
    missing += [(str(p), pkg, why) for p, pkg, why in FILES if not p.exists()]
    return missing


def virt_fw_vars_missing() -> bool:
    """virt-fw-vars comes with Keel's Python dependency virt-firmware, not from a Debian
    package: only a broken install lacks it."""
    try:
        return importlib.util.find_spec("virt.firmware.vars") is None
    except ImportError:  # its parent package, virt, is missing
        return True


def report() -> tuple[str, int]:
    missing, vars_missing = missing_tools(), virt_fw_vars_missing()
    if not missing and not vars_missing:
        return f"all {len(TOOLS) + len(FILES)} host tools are present", 0
    lines = []
    if missing:
        width = max(len(m[0]) for m in missing)
        lines.append(f"missing {len(missing)} host tool(s):")
        lines += [
            f"  {what:<{width}}  apt-get install {pkg:<16} ({why})" for what, pkg, why in missing
        ]
        packages = " ".join(sorted({m[1] for m in missing}))
        lines.append(f"install them all: apt-get install --no-install-recommends {packages}")
    if vars_missing:
        lines.append(
            "missing virt-fw-vars (keel run --secure-boot: enroll keys): it comes with "
            "Keel's Python package virt-firmware; reinstall Keel with `make setup`"
        )
    return "\n".join(lines), 1
