"""Build step: a host starts the services its image enables, and no others.

On a machine's first boot (machine-id "uninitialized") systemd applies the unit
presets to /etc ("Populated /etc with preset unit settings"), and with no preset for
a unit the default is to enable it. Debian ships only systemd's own preset file, so on
trixie (systemd 257) the first boot enabled docker.service and containerd.service again
(the engine step leaves them to socket activation), and ssh.socket and
systemd-networkd-wait-online.service as well. The build therefore writes a preset that
enables exactly what the image enables, and disables the rest.

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
            instance, dot, unit_type = instance_and_type.rpartition(".")
            if at and instance:
                units[f"{prefix}@.{unit_type}"].append(instance)
            else:
                units.setdefault(name, [])
    return units


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
    preset = ctx.tree / PRESET
    preset.parent.mkdir(parents=True, exist_ok=True)
    preset.write_text(render_preset(enabled_units(ctx.tree)))
    preset.chmod(0o644)
