"""Apply a validated Config to a root directory: check everything that depends on the
machine first (accounts, existing files, links on the way, units, disks), then write.
Order: disks and filesystems (as Ignition's disks stage comes before its files stage),
groups, users (files may be owned by them), directories, files, symbolic links, hard
links (their targets may be config files), units. All writes go through safefs, so
no link (planted, or made by this config) is ever followed."""

from __future__ import annotations

import stat
from pathlib import Path

from hostd.ignition import accounts, units
from hostd.ignition.blockdev import Machine
from hostd.ignition.config import Config, ConfigError, Directory, File, Link, Owner
from hostd.ignition.safefs import Root, UnsafePath
from hostd.ignition.storage import StoragePlan, apply_storage, check_storage
from hostd.ignition.tree import Tree

Entry = File | Directory | Link


def _final_contents(fs: Root, entry: File) -> bytes:
    """What the file holds once the entry is applied (append stays idempotent)."""
    if entry.contents is not None:
        base = entry.contents
    else:
        info = fs.lstat(entry.path)
        base = fs.read(entry.path) or b"" if info and stat.S_ISREG(info.st_mode) else b""
    tail = b"".join(entry.append)
    if tail and entry.contents is None and base.endswith(tail):
        return base  # appended by an earlier run
    return base + tail


def _owner_problem(config: Config, fs: Root, entry: Entry) -> list[str]:
    users, groups = accounts.accounts(fs), accounts.groups(fs)
    new_users = {u.name for u in config.users if u.should_exist}
    new_groups = {g.name for g in config.groups if g.should_exist}
    # A new user gets a group of its own name unless told otherwise.
    new_groups |= {u.name for u in config.users if u.should_exist and not u.no_user_group}
    problems = []
    user, group = entry.user, entry.group
    if user and user.name and user.name not in users and user.name not in new_users:
        problems.append(f"{entry.path}: user {user.name!r} does not exist")
    if group and group.name and group.name not in groups and group.name not in new_groups:
        problems.append(f"{entry.path}: group {group.name!r} does not exist")
    return problems


def _existing_problem(fs: Root, entry: Entry) -> str | None:
    problem = fs.check_parents(entry.path)
    if problem:
        return problem
    info = fs.lstat(entry.path)
    if info is None:
        return None
    if stat.S_ISDIR(info.st_mode) and not isinstance(entry, Directory) and entry.overwrite:
        return None  # removed with all it holds, as asked
    if entry.overwrite:
        return None
    if isinstance(entry, File):
        if not stat.S_ISREG(info.st_mode):
            return f"{entry.path} exists and is not a file; set overwrite: true to replace it"
        if entry.contents is not None and fs.read(entry.path) != _final_contents(fs, entry):
            return f"{entry.path} exists with other contents; set overwrite: true to replace it"
    elif isinstance(entry, Directory) and not stat.S_ISDIR(info.st_mode):
        return f"{entry.path} exists and is not a directory"
    elif isinstance(entry, Link) and not _link_matches(fs, entry):
        return f"{entry.path} exists and is not this link; set overwrite: true"
    return None


def _hard_target_problem(fs: Root, config: Config, link: Link) -> str | None:
    if any(f.path == link.target for f in config.files):
        return None
    problem = fs.check_parents(link.target)
    if problem:
        return problem
    info = fs.lstat(link.target)
    if info is None:
        return f"{link.path}: hard link target {link.target} does not exist"
    if stat.S_ISDIR(info.st_mode):
        return f"{link.path}: hard link target {link.target} is a directory"
    return None


def check(tree: Tree, config: Config, machine: Machine | None = None) -> StoragePlan:
    """Raise ConfigError with every reason this config cannot be applied here; the plan
    for its disks and filesystems otherwise."""
    fs = tree.fs
    plan, problems = StoragePlan(), list[str]()
    if config.disks or config.filesystems:
        plan, problems = check_storage(machine or Machine(), fs, config)
    problems += accounts.check_accounts(fs, config)
    problems += units.check_units(fs, config.units)
    entries: list[Entry] = [*config.files, *config.directories, *config.links]
    for entry in entries:
        problems += _owner_problem(config, fs, entry)
        try:
            problem = _existing_problem(fs, entry)
        except OSError as error:
            problem = f"{entry.path}: {error.strerror or error}"
        if problem:
            problems.append(problem)
    for link in config.links:
        if link.hard and (problem := _hard_target_problem(fs, config, link)):
            problems.append(problem)
    if problems:
        raise ConfigError("; ".join(problems))
    return plan


def _link_matches(fs: Root, entry: Link) -> bool:
    if entry.hard:
        return fs.same_file(entry.path, entry.target)
    return fs.readlink(entry.path) == entry.target


def _ids(tree: Tree, user: Owner | None, group: Owner | None) -> tuple[int, int]:
    uid = gid = -1
    if user is not None:
        uid = user.id if user.id is not None else accounts.accounts(tree.fs)[str(user.name)].uid
    if group is not None:
        gid = group.id if group.id is not None else accounts.groups(tree.fs)[str(group.name)][0]
    return uid, gid


def _chown(tree: Tree, path: str, user: Owner | None, group: Owner | None) -> None:
    uid, gid = _ids(tree, user, group)
    if uid == -1 and gid == -1:
        return
    current = tree.fs.lstat(path)
    if current is None or (uid in (-1, current.st_uid) and gid in (-1, current.st_gid)):
        return
    tree.fs.chown(path, uid, gid)  # never follows a link
    tree.note(f"set owner of {path} to {uid}:{gid}")


def _apply_directory(tree: Tree, entry: Directory) -> None:
    info = tree.fs.lstat(entry.path)
    if entry.overwrite and info is not None and not stat.S_ISDIR(info.st_mode):
        tree.fs.remove(entry.path)
        info = None
    mode = 0o755 if entry.mode is None else entry.mode
    if info is not None:
        if entry.mode is not None and stat.S_IMODE(info.st_mode) != mode:
            tree.fs.chmod(entry.path, mode)
            tree.note(f"set mode {mode:04o} on {entry.path}")
        else:
            tree.note(f"unchanged: {entry.path}/")
    else:
        tree.fs.mkdir(entry.path, mode)
        tree.note(f"made directory {entry.path} (mode {mode:04o})")
    _chown(tree, entry.path, entry.user, entry.group)


def _apply_file(tree: Tree, entry: File) -> None:
    info = tree.fs.lstat(entry.path)
    if info is not None and stat.S_ISDIR(info.st_mode):
        tree.fs.remove(entry.path)  # check() allowed this only with overwrite
        info = None
    regular = info is not None and stat.S_ISREG(info.st_mode)
    if entry.mode is not None:
        mode = entry.mode
    elif regular and info is not None:
        mode = stat.S_IMODE(info.st_mode)
    else:
        mode = 0o644
    uid, gid = _ids(tree, entry.user, entry.group)
    # A link or special file at the path is replaced by the rename, never followed.
    tree.write_file(entry.path, _final_contents(tree.fs, entry), mode, uid, gid)


def _apply_link(tree: Tree, entry: Link) -> None:
    if not entry.hard:
        info = tree.fs.lstat(entry.path)
        if info is not None and stat.S_ISDIR(info.st_mode):
            tree.fs.remove(entry.path)
        tree.symlink(entry.path, entry.target)
        _chown(tree, entry.path, entry.user, entry.group)
        return
    if _link_matches(tree.fs, entry):
        tree.note(f"unchanged: {entry.path} (hard link to {entry.target})")
        return
    if tree.fs.lstat(entry.path) is not None:
        tree.fs.remove(entry.path)
    tree.fs.hardlink(entry.path, entry.target)
    tree.note(f"hard-linked {entry.path} to {entry.target}")


def apply_config(root: Path, config: Config, machine: Machine | None = None) -> list[str]:
    """Apply config under root; returns the log of what was done (or found done).
    machine: the block devices storage.disks and .filesystems name (this machine's,
    unless a test stands in for it)."""
    if config.remote:  # their files hold placeholders until resolve.py fetches them
        raise ConfigError("the config's http(s) contents were not fetched (see resolve.py)")
    if machine is None and (config.disks or config.filesystems):
        machine = Machine()
    tree = Tree(root)
    try:
        try:
            plan = check(tree, config, machine)
        except UnsafePath as error:
            raise ConfigError(str(error.strerror or error)) from None
        if machine is not None and (plan.disks or plan.formats):
            apply_storage(machine, plan, tree)
        # Groups to remove go last: userdel must first remove their users.
        for group in config.groups:
            if group.should_exist:
                accounts.apply_group(tree, group)
        for user in config.users:
            accounts.apply_user(tree, user)
        for group in config.groups:
            if not group.should_exist:
                accounts.apply_group(tree, group)
        for directory in sorted(config.directories, key=lambda d: d.path):
            _apply_directory(tree, directory)
        for file in config.files:
            _apply_file(tree, file)
        for link in sorted(config.links, key=lambda k: k.hard):
            _apply_link(tree, link)
        for unit in config.units:
            units.apply_unit(tree, unit)
    finally:
        tree.close()
    return tree.log
