"""systemd.units: unit files and drop-ins under /etc/systemd/system, enabling through
the [Install] section (the symlinks `systemctl enable` makes), masking."""

from __future__ import annotations

from pathlib import Path

from hostd.ignition.config import Unit
from hostd.ignition.tree import Tree

LOCAL_UNITS = "etc/systemd/system"
UNIT_DIRS = (LOCAL_UNITS, "usr/lib/systemd/system", "lib/systemd/system")


def _template_name(name: str) -> str:
    """foo@bar.service -> foo@.service; other names unchanged."""
    stem, at, rest = name.partition("@")
    if not at:
        return name
    return f"{stem}@{rest[rest.rindex('.') :]}"


def _find_unit(root: Path, name: str) -> Path | None:
    for folder in UNIT_DIRS:
        for candidate in (name, _template_name(name)):
            path = root / folder / candidate
            if path.is_file() or path.is_symlink():
                return path
    return None


def install_targets(text: str) -> list[tuple[str, str]]:
    """(".wants" or ".requires", target) for each WantedBy=/RequiredBy= of [Install].

    Read by hand: a unit may repeat a key, which configparser would collapse."""
    found = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        if section != "Install" or not equals:
            continue
        suffix = {"WantedBy": ".wants", "RequiredBy": ".requires"}.get(key.strip())
        if suffix:
            found += [(suffix, target) for target in value.split()]
    return found


def _unit_text(root: Path, unit: Unit) -> str | None:
    if unit.contents is not None:
        return unit.contents
    path = _find_unit(root, unit.name)
    return path.read_text() if path is not None else None


def check_units(root: Path, units: tuple[Unit, ...]) -> list[str]:
    problems = []
    for unit in units:
        if unit.mask and unit.contents is not None:
            problems.append(f"unit {unit.name}: 'mask' and 'contents' cannot both be given")
        if unit.enabled is None:
            continue
        text = _unit_text(root, unit)
        if text is None:
            problems.append(f"unit {unit.name}: no contents given and no such unit on this host")
        elif unit.enabled and not install_targets(text):
            problems.append(
                f"unit {unit.name}: 'enabled' needs an [Install] section with WantedBy= "
                "or RequiredBy="
            )
    return problems


def apply_unit(tree: Tree, unit: Unit) -> None:
    local = f"/{LOCAL_UNITS}"
    if unit.contents is not None:
        tree.write_file(f"{local}/{unit.name}", unit.contents.encode(), 0o644)
    for dropin in unit.dropins:
        tree.write_file(f"{local}/{unit.name}.d/{dropin.name}", dropin.contents.encode(), 0o644)
    if unit.mask:
        tree.symlink(f"{local}/{unit.name}", "/dev/null")
    if unit.enabled is None:
        return
    text = _unit_text(tree.root, unit) or ""
    found = _find_unit(tree.root, unit.name)
    unit_path = "/" + str(found.relative_to(tree.root)) if found else f"{local}/{unit.name}"
    for suffix, target in install_targets(text):
        link = f"{local}/{target}{suffix}/{unit.name}"
        if unit.enabled:
            tree.symlink(link, unit_path)
        elif tree.host_path(link).is_symlink():
            tree.host_path(link).unlink()
            tree.note(f"disabled {unit.name}: removed {link}")
