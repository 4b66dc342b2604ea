"""Apply a validated Config to a root directory: check everything that depends on the
machine first (existing files, groups, units), then write. Order: users (files may
be owned by them), directories, files, links, units."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hostd.ignition import accounts, units
from hostd.ignition.config import Config, ConfigError, Directory, File, Link, Owner
from hostd.ignition.tree import Tree


def _final_contents(tree: Tree, entry: File) -> bytes:
    """What the file holds once the entry is applied (append stays idempotent)."""
    target = tree.host_path(entry.path)
    if entry.contents is not None:
        base = entry.contents
    elif target.is_file():
        base = target.read_bytes()
    else:
        base = b""
    tail = b"".join(entry.append)
    if tail and entry.contents is None and base.endswith(tail):
        return base  # appended by an earlier run
    return base + tail


def _owner_problem(
    config: Config, known: dict[str, accounts.Account], owner: Owner | None, what: str
) -> str | None:
    if owner is None or owner.name is None:
        return None
    if owner.name in known or any(u.name == owner.name for u in config.users):
        return None
    return f"{what}: user {owner.name!r} does not exist"


def check(tree: Tree, config: Config) -> None:
    """Raise ConfigError with every reason this config cannot be applied here."""
    problems = accounts.check_users(tree.root, config.users)
    problems += units.check_units(tree.root, config.units)
    known = accounts.accounts(tree.root)
    known_groups = accounts.groups(tree.root)
    entries: list[File | Directory | Link] = [*config.files, *config.directories, *config.links]
    for entry in entries:
        problem = _owner_problem(config, known, entry.user, entry.path)
        if problem:
            problems.append(problem)
        if entry.group and entry.group.name and entry.group.name not in known_groups:
            declared = any(u.name == entry.group.name for u in config.users)  # user-group
            if not declared:
                problems.append(f"{entry.path}: group {entry.group.name!r} does not exist")
        target = tree.host_path(entry.path)
        if not (target.exists() or target.is_symlink()) or entry.overwrite:
            continue
        if isinstance(entry, File) and entry.contents is not None:
            if not target.is_file() or target.read_bytes() != _final_contents(tree, entry):
                problems.append(
                    f"{entry.path} exists with other contents; set overwrite: true to replace it"
                )
        elif isinstance(entry, File) and not target.is_file():
            problems.append(f"{entry.path} exists and is not a file")
        elif isinstance(entry, Directory) and not target.is_dir():
            problems.append(f"{entry.path} exists and is not a directory")
        elif isinstance(entry, Link) and not _link_matches(tree, entry):
            problems.append(f"{entry.path} exists and is not this link; set overwrite: true")
    if problems:
        raise ConfigError("; ".join(problems))


def _link_matches(tree: Tree, entry: Link) -> bool:
    path = tree.host_path(entry.path)
    if entry.hard:
        target = tree.host_path(entry.target)
        return path.exists() and target.exists() and os.path.samefile(path, target)
    return path.is_symlink() and os.readlink(path) == entry.target


def _chown(tree: Tree, path: str, user: Owner | None, group: Owner | None) -> None:
    if user is None and group is None:
        return
    known = accounts.accounts(tree.root)
    uid = gid = -1
    if user is not None:
        uid = user.id if user.id is not None else known[str(user.name)].uid
    if group is not None:
        gid = group.id if group.id is not None else accounts.groups(tree.root)[str(group.name)][0]
    target = tree.host_path(path)
    current = target.lstat()
    if (uid in (-1, current.st_uid)) and (gid in (-1, current.st_gid)):
        return
    os.lchown(target, uid, gid)
    tree.note(f"set owner of {path} to {uid}:{gid}")


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        import shutil

        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def _apply_directory(tree: Tree, entry: Directory) -> None:
    target = tree.host_path(entry.path)
    if entry.overwrite and (target.is_symlink() or (target.exists() and not target.is_dir())):
        _remove(target)
    mode = 0o755 if entry.mode is None else entry.mode
    if target.is_dir():
        if entry.mode is not None and stat.S_IMODE(target.stat().st_mode) != mode:
            target.chmod(mode)
            tree.note(f"set mode {mode:04o} on {entry.path}")
        else:
            tree.note(f"unchanged: {entry.path}/")
    else:
        tree.make_parents(target)
        target.mkdir()
        target.chmod(mode)
        tree.note(f"made directory {entry.path} (mode {mode:04o})")
    _chown(tree, entry.path, entry.user, entry.group)


def _apply_file(tree: Tree, entry: File) -> None:
    target = tree.host_path(entry.path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        _remove(target)  # check() allowed this only with overwrite
    if entry.mode is not None:
        mode = entry.mode
    elif target.is_file():
        mode = stat.S_IMODE(target.stat().st_mode)
    else:
        mode = 0o644
    tree.write_file(entry.path, _final_contents(tree, entry), mode)
    _chown(tree, entry.path, entry.user, entry.group)


def _apply_link(tree: Tree, entry: Link) -> None:
    target = tree.host_path(entry.path)
    if not entry.hard:
        tree.symlink(entry.path, entry.target)
        _chown(tree, entry.path, entry.user, entry.group)
        return
    if _link_matches(tree, entry):
        tree.note(f"unchanged: {entry.path} (hard link to {entry.target})")
        return
    _remove(target)
    tree.make_parents(target)
    os.link(tree.host_path(entry.target), target)
    tree.note(f"hard-linked {entry.path} to {entry.target}")


def apply_config(root: Path, config: Config) -> list[str]:
    """Apply config under root; returns the log of what was done (or found done)."""
    tree = Tree(root)
    check(tree, config)
    for user in config.users:
        accounts.apply_user(tree, user)
    for directory in sorted(config.directories, key=lambda d: d.path):
        _apply_directory(tree, directory)
    for file in config.files:
        _apply_file(tree, file)
    for link in config.links:
        _apply_link(tree, link)
    for unit in config.units:
        units.apply_unit(tree, unit)
    return tree.log
