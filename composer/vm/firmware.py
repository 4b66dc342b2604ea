"""Find UEFI firmware through QEMU's firmware descriptors (docs/interop/firmware.json).

Distributions describe their firmware builds in JSON files instead of fixed paths, so
reading the descriptors keeps Keel working when a distribution renames OVMF files."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError

# Search order defined by QEMU: user config overrides /etc, which overrides /usr/share;
# a file with the same name in an earlier directory hides the later ones.
DESCRIPTOR_DIRS = (
    Path.home() / ".config" / "qemu" / "firmware",
    Path("/etc/qemu/firmware"),
    Path("/usr/share/qemu/firmware"),
)

INSTALL_HINT = "install the Debian package `ovmf` (it ships OVMF and its QEMU descriptors)"


@dataclass(frozen=True)
class Firmware:
    """A split-flash UEFI build: read-only code plus a template for per-VM variables."""

    descriptor: Path
    code: Path
    vars_template: Path


def _descriptor_files(dirs: tuple[Path, ...]) -> list[Path]:
    by_name: dict[str, Path] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for file in directory.glob("*.json"):
            by_name.setdefault(file.name, file)
    # The numeric prefix in the file name is the priority: lower wins.
    return [by_name[name] for name in sorted(by_name)]


def parse_descriptor(path: Path, machine: str = "pc-q35-7.2") -> Firmware | None:
    """The firmware in one descriptor if Keel can use it, else None.

    Usable: UEFI for x86_64 on a q35 machine, split flash (code + vars template) in raw
    format, and no Secure Boot or SMM requirement: Keel's images are not signed, and SMM
    would need extra machine options for no gain in a test VM.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "uefi" not in data.get("interface-types", []):
        return None
    features = set(data.get("features", []))
    if features & {"secure-boot", "requires-smm", "enrolled-keys"}:
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
    return Firmware(path, Path(executable["filename"]), Path(template["filename"]))


def find_firmware(dirs: tuple[Path, ...] = DESCRIPTOR_DIRS) -> Firmware:
    """The highest-priority usable firmware whose files exist."""
    for file in _descriptor_files(dirs):
        firmware = parse_descriptor(file)
        if firmware and firmware.code.is_file() and firmware.vars_template.is_file():
            return firmware
    searched = ", ".join(str(d) for d in dirs)
    raise KeelError(
        f"no usable UEFI firmware found (x86_64, q35, no Secure Boot) in {searched}",
        hint=INSTALL_HINT,
    )
