"""systemd.units: unit files and drop-ins under /etc/systemd/system, enabling through
the [Install] section (the symlinks `systemctl enable` makes, created without
following any link on the way), masking."""

from __future__ import annotations

import stat

from hostd.ignition import names
from hostd.ignition.config import LOCAL_UNITS, Unit
from hostd.ignition.safefs import Root, UnsafePath
from hostd.ignition.tree import Tree

UNIT_DIRS = (LOCAL_UNITS, "/usr/lib/systemd/system", "/lib/systemd/system")


def _template_name(name: str) -> str:
    """foo@bar.service -> foo@.service; other names unchanged."""
    stem, at, rest = name.partition("@")
    if not at:
        return name
    return f"{stem}@{rest[rest.rindex('.') :]}"


def _find_unit(fs: Root, name: str) -> str | None:
    for folder in UNIT_DIRS:
        for candidate in (name, _template_name(name)):
            path = f"{folder}/{candidate}"
            try:
                if fs.lstat(path) is not None:
                    return path
            except (UnsafePath, NotADirectoryError):
                continue
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


def _unit_text(fs: Root, unit: Unit) -> str:
    """The unit's text; ValueError saying why it cannot be read."""
    if unit.contents is not None:
        return unit.contents
    path = _find_unit(fs, unit.name)
    if path is None:
        raise ValueError("no contents given and no such unit on this host")
    try:
        data = fs.read(path)
    except UnsafePath:
        raise ValueError(
            f"{path} is a link (an alias?) or not a file; enable the unit it names"
        ) from None
    if data is None:
        raise ValueError(f"{path} vanished")
    return data.decode("utf-8", "replace")


def _unit_path(fs: Root, unit: Unit) -> str:
    return _find_unit(fs, unit.name) or f"{LOCAL_UNITS}/{unit.name}"


def enable_links(fs: Root, unit: Unit) -> list[str]:
    """The .wants/.requires links enabling unit makes (ValueError if unreadable)."""
    return [
        f"{LOCAL_UNITS}/{target}{suffix}/{unit.name}"
        for suffix, target in install_targets(_unit_text(fs, unit))
    ]


def check_units(fs: Root, units: tuple[Unit, ...]) -> list[str]:
    problems = []
    for unit in units:
        local = f"{LOCAL_UNITS}/{unit.name}"
        writes = [local] if unit.contents is not None or unit.mask else []
        writes += [f"{local}.d/{dropin.name}" for dropin in unit.dropins]
        if unit.enabled is not None:
            try:
                text = _unit_text(fs, unit)
            except ValueError as error:
                problems.append(f"unit {unit.name}: {error}")
                continue
            targets = install_targets(text)
            if unit.enabled and not targets:
                problems.append(
                    f"unit {unit.name}: 'enabled' needs an [Install] section with WantedBy= "
                    "or RequiredBy="
                )
            bad = [names.unit_problem(target) for _suffix, target in targets]
            problems += [f"unit {unit.name}: [Install] names {p}" for p in bad if p]
            if unit.enabled and not any(bad):  # bad names would make bad paths
                writes += enable_links(fs, unit)
        for path in writes:
            problem = fs.check_parents(path)
            if problem:
                problems.append(f"unit {unit.name}: {problem}")
                continue
            try:
                info = fs.lstat(path)
            except OSError as error:
                problems.append(f"unit {unit.name}: {path}: {error.strerror}")
                continue
            if info is not None and stat.S_ISDIR(info.st_mode):
                problems.append(f"unit {unit.name}: {path} is a directory")
    return problems


def apply_unit(tree: Tree, unit: Unit) -> None:
    local = f"{LOCAL_UNITS}/{unit.name}"
    if unit.contents is not None:
        tree.write_file(local, unit.contents.encode(), 0o644)
    for dropin in unit.dropins:
        tree.write_file(f"{local}.d/{dropin.name}", dropin.contents.encode(), 0o644)
    if unit.mask:
        tree.symlink(local, "/dev/null")
    if unit.enabled is None:
        return
    unit_path = _unit_path(tree.fs, unit)
    for link in enable_links(tree.fs, unit):
        if unit.enabled:
            tree.symlink(link, unit_path)
        elif tree.fs.readlink(link) is not None:
            tree.fs.remove(link)
            tree.note(f"disabled {unit.name}: removed {link}")
