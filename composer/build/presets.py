"""Build step: a host starts the services its image enables, and no others.

On a machine's first boot (machine-id "uninitialized") systemd applies the unit
presets to /etc ("Populated /etc with preset unit settings"), and with no preset for
a unit the default is to enable it. Debian ships only systemd's own preset file, so on
trixie (systemd 257) the first boot enabled docker.service and containerd.service again
(the engine step leaves them to socket activation), and ssh.socket and
systemd-networkd-wait-online.service as well. The build therefore writes a preset that
enables exactly what the image enables, and disables the rest.

A preset cannot keep everything off, though: enabling a unit also enables the units
its [Install] section names in Also=, whatever their own preset says (trixie's
systemd-networkd.service names systemd-networkd-wait-online.service, which would hold
docker.service and the health gate until DHCP answers). Such a unit the image did not
enable is masked in the image, so the host runs what the image enables, exactly as on
bookworm, where nothing re-enabled units on first boot.

Some units of a suite do a job Keel does itself; those are disabled here when the
built tree has them, so one definition boots the same on every suite."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from composer.build.context import BuildContext

PRESET = "usr/lib/systemd/system-preset/00-keel.preset"
UNIT_LINKS = "etc/systemd/system"
VENDOR_UNITS = "usr/lib/systemd/system"

# Units a suite ships for a job Keel does, and which Keel unit does it.
REPLACED_BY_KEEL = {
    # ssh-keygen -A also makes an RSA key (about ten seconds under emulation); Keel's
    # makes the key types sshd_config.d/keel.conf names.
    "sshd-keygen.service": "keel-ssh-keygen.service",
}


def drop_replaced_units(tree: Path) -> list[str]:
    """Remove the enablement links of the suite's units Keel replaces."""
    dropped = []
    for link in sorted((tree / UNIT_LINKS).glob("*.*/*")):
        if link.is_symlink() and link.name in REPLACED_BY_KEEL:
            link.unlink()
            dropped.append(link.name)
    return sorted(set(dropped))


def enabled_units(tree: Path) -> dict[str, list[str]]:
    """Every unit enabled in the tree (linked from a .wants or .requires folder), with
    the instances of a template unit."""
    units: dict[str, list[str]] = defaultdict(list)
    for folder in (tree / UNIT_LINKS).glob("*"):
        if not folder.is_dir() or folder.suffix not in (".wants", ".requires"):
            continue
        for link in folder.iterdir():
            if not link.is_symlink():
                continue
            name = link.name
            prefix, at, instance_and_type = name.partition("@")
            instance, _, unit_type = instance_and_type.rpartition(".")
            if at and instance:
                units[f"{prefix}@.{unit_type}"].append(instance)
            else:
                units.setdefault(name, [])
    return units


def _also(unit_file: Path) -> list[str]:
    """The Also= units of a unit file's [Install] section."""
    also: list[str] = []
    section = ""
    for line in unit_file.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and line.startswith("Also="):
            also += line.removeprefix("Also=").split()
    return also


def mask_units_enabled_only_by_also(tree: Path, units: dict[str, list[str]]) -> list[str]:
    """Mask the units that enabling an enabled unit would enable too (Also=) though
    the image left them off; returns their names."""
    masked = []
    for name in sorted(units):
        unit_file = tree / VENDOR_UNITS / name
        if not unit_file.is_file():
            continue
        for other in _also(unit_file):
            link = tree / UNIT_LINKS / other
            if other in units or link.exists() or link.is_symlink():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/dev/null")
            masked.append(other)
    return masked


def render_preset(units: dict[str, list[str]]) -> str:
    lines = [
        "# Written by Keel's build: the units this image enables. First boot applies",
        "# presets, and everything not listed here stays disabled.",
    ]
    for name in sorted(units):
        instances = " ".join(sorted(set(units[name])))
        lines.append(f"enable {name} {instances}".rstrip())
    lines.append("disable *")
    return "\n".join(lines) + "\n"


def step(ctx: BuildContext) -> None:
    drop_replaced_units(ctx.tree)
    units = enabled_units(ctx.tree)
    mask_units_enabled_only_by_also(ctx.tree, units)
    preset = ctx.tree / PRESET
    preset.parent.mkdir(parents=True, exist_ok=True)
    preset.write_text(render_preset(units))
    preset.chmod(0o644)
