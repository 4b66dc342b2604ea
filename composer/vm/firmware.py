"""Find UEFI firmware through QEMU's firmware descriptors (docs/interop/firmware.json).

Distributions describe their firmware builds in JSON files instead of fixed paths, so
reading the descriptors keeps Keel working when a distribution renames OVMF files.
The tools tree's descriptors (composer/build/toolstree.py: Debian 13's OVMF, 2 s
sooner to the boot loader under TCG) come before the build machine's."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from composer.build.toolstree import ToolsTree
from composer.core.errors import KeelError

# Search order defined by QEMU: user config overrides /etc, which overrides /usr/share;
# a file with the same name in an earlier directory hides the later ones.
DESCRIPTOR_DIRS = (
    Path.home() / ".config" / "qemu" / "firmware",
    Path("/etc/qemu/firmware"),
    Path("/usr/share/qemu/firmware"),
)

INSTALL_HINT = "install the Debian package `ovmf` (it ships OVMF and its QEMU descriptors)"
# A Secure Boot build must keep its variables in SMM-only flash: without SMM the guest
# OS could rewrite the enrolled keys, so Keel never takes one without the other.
SECURE_BOOT_FEATURES = frozenset({"secure-boot", "requires-smm"})


@dataclass(frozen=True)
class Firmware:
    """A split-flash UEFI build: read-only code plus a template for per-VM variables."""

    descriptor: Path
    code: Path
    vars_template: Path
    # Secure Boot capable; needs a machine with SMM and the flash guarded by it.
    secure_boot: bool = False


def _descriptor_files(dirs: tuple[Path, ...]) -> list[Path]:
    by_name: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for file in directory.glob("*.json"):
            by_name.setdefault(file.name, file)
    # The numeric prefix in the file name is the priority: lower wins.
    return [by_name[name] for name in sorted(by_name)]


def parse_descriptor(
    path: Path, machine: str = "pc-q35-7.2", secure_boot: bool = False, tree: Path | None = None
) -> Firmware | None:
    """The firmware in one descriptor if Keel can use it, else None.

    Usable: UEFI for x86_64 on a q35 machine, split flash (code + vars template) in raw
    format, and no pre-enrolled keys: Keel enrolls the image's own, and distribution or
    Microsoft keys would let the firmware start loaders the image owner never signed.
    With secure_boot, Secure Boot with SMM; without, neither: SMM needs extra machine
    options for no gain in a VM that checks no signatures.
    tree: the descriptor belongs to a tree (the tools tree), and its absolute file
    names are read inside it.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "uefi" not in data.get("interface-types", []):
        return None
    features = set(data.get("features", []))
    if "enrolled-keys" in features:
        return None
    wanted = SECURE_BOOT_FEATURES if secure_boot else frozenset()
    if (features & SECURE_BOOT_FEATURES) != wanted:
        return None
    if not any(
        target.get("architecture") == "x86_64"
        and any(fnmatch.fnmatch(machine, pattern) for pattern in target.get("machines", []))
        for target in data.get("targets", [])
    ):
        return None
    mapping = data.get("mapping", {})
    if mapping.get("device") != "flash" or mapping.get("mode", "split") != "split":
        return None
    executable = mapping.get("executable", {})
    template = mapping.get("nvram-template", {})
    if not executable.get("filename") or not template.get("filename"):
        return None
    if executable.get("format", "raw") != "raw" or template.get("format", "raw") != "raw":
        return None
    code, variables = Path(executable["filename"]), Path(template["filename"])
    if tree is not None:
        if not (code.is_absolute() and variables.is_absolute()):
            return None
        code, variables = tree / code.relative_to("/"), tree / variables.relative_to("/")
    return Firmware(path, code, variables, secure_boot)


def find_firmware(
    dirs: tuple[Path, ...] = DESCRIPTOR_DIRS,
    secure_boot: bool = False,
    tools: ToolsTree | None = None,
) -> Firmware:
    """The highest-priority usable firmware whose files exist, with Secure Boot or
    without: the tools tree's first, if given, then the one in dirs."""
    candidates: list[tuple[Path, Path | None]] = []
    if tools is not None:
        candidates += [(f, tools.root) for f in _descriptor_files((tools.firmware_descriptors,))]
    candidates += [(file, None) for file in _descriptor_files(dirs)]
    for file, tree in candidates:
        firmware = parse_descriptor(file, secure_boot=secure_boot, tree=tree)
        if firmware and firmware.code.is_file() and firmware.vars_template.is_file():
            return firmware
    searched = ", ".join(str(d) for d in dirs)
    if secure_boot:
        wanted = "with Secure Boot and SMM, keys not enrolled"
        hint = f"{INSTALL_HINT}; Debian's Secure Boot build is OVMF_CODE_4M.secboot.fd"
    else:
        wanted, hint = "no Secure Boot", INSTALL_HINT
    raise KeelError(
        f"no usable UEFI firmware found (x86_64, q35, {wanted}) in {searched}", hint=hint
    )
