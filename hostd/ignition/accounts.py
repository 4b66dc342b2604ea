"""passwd.groups and passwd.users: made with shadow's groupadd/useradd (under --prefix
for a root other than /), changed with usermod, removed with userdel/groupdel
(shouldExist: false); password hash and authorized SSH keys. Everything useradd could
refuse is checked first (check_accounts), so a config is not left half applied."""

from __future__ import annotations

import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hostd.ignition.config import Config, ConfigError, Group, User
from hostd.ignition.safefs import Root, UnsafePath
from hostd.ignition.tree import Tree

DEFAULT_HOME = "/home"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def _table(fs: Root, name: str) -> list[list[str]]:
    try:
        data = fs.read(f"/etc/{name}")
    except (UnsafePath, NotADirectoryError):
        return []
    text = (data or b"").decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def accounts(fs: Root) -> dict[str, Account]:
    return {
        row[0]: Account(row[0], _int(row[2]), _int(row[3]), row[5])
        for row in _table(fs, "passwd")
        if len(row) >= 7
    }


def groups(fs: Root) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Group name -> (gid, members)."""
    return {
        row[0]: (_int(row[2]), tuple(m for m in row[3].split(",") if m))
        for row in _table(fs, "group")
        if len(row) >= 4
    }


def _password_hash(fs: Root, name: str) -> str | None:
    return next((row[1] for row in _table(fs, "shadow") if row and row[0] == name), None)


def _shadow_tool(root: Path, *args: str) -> None:
    prefix = [] if root == Path("/") else ["--prefix", str(root)]
    # Names were checked not to start with '-'; "--" makes sure anyway.
    command = [args[0], *prefix, *args[1:-1], "--", args[-1]]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")


def home_of(user: User, known: dict[str, Account]) -> str:
    if user.name in known:
        return known[user.name].home
    return user.home_dir or f"{DEFAULT_HOME}/{user.name}"


def _ssh_problem(fs: Root, home: str) -> str | None:
    """Why keys cannot be written safely under home (a link anywhere is refused)."""
    for path, kind in ((f"{home}/.ssh", stat.S_ISDIR), (f"{home}/.ssh/authorized_keys",
                                                         stat.S_ISREG)):  # fmt: skip
        try:
            info = fs.lstat(path)
        except UnsafePath as error:
            return f"{path}: {error.strerror}"
        except OSError as error:
            return f"{path}: {error.strerror}"
        if info is None:
            return None
        if not kind(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "of another type"
            return f"{path} is {what}; refusing to write SSH keys through it"
    return None


def check_accounts(fs: Root, config: Config) -> list[str]:
    """Problems that would stop the groups and users from being applied."""
    problems: list[str] = []
    known_users, known_groups = accounts(fs), groups(fs)
    made_groups = {g.name for g in config.groups if g.should_exist}
    removed_users = {u.name for u in config.users if not u.should_exist}
    for group in config.groups:
        existing = known_groups.get(group.name)
        if not group.should_exist and existing is not None:
            primary_of = [
                a.name for a in known_users.values()
                if a.gid == existing[0] and a.name not in removed_users
            ]  # fmt: skip
            if primary_of:
                problems.append(
                    f"group {group.name} cannot be removed: it is the primary group of "
                    f"user {primary_of[0]}"
                )
        if not group.should_exist or group.gid is None:
            continue
        if existing is not None and existing[0] != group.gid:
            problems.append(f"group {group.name} exists with gid {existing[0]}, not {group.gid}")
        taken = [n for n, (gid, _) in known_groups.items() if gid == group.gid and n != group.name]
        if existing is None and taken:
            problems.append(f"group {group.name}: gid {group.gid} is taken by {taken[0]}")
    for user in config.users:
        if not user.should_exist:
            continue
        account = known_users.get(user.name)
        for wanted in (*user.groups, *filter(None, [user.primary_group])):
            if wanted not in known_groups and wanted not in made_groups:
                problems.append(f"user {user.name}: group {wanted!r} does not exist on this host")
        if account is not None:
            if user.uid is not None and account.uid != user.uid:
                problems.append(
                    f"user {user.name} exists with uid {account.uid}, not {user.uid} "
                    "(changing it would orphan the user's files)"
                )
            if user.home_dir is not None and account.home != user.home_dir:
                problems.append(f"user {user.name} exists with home {account.home}")
        else:
            taken = [
                n for n, a in known_users.items() if user.uid is not None and a.uid == user.uid
            ]
            if taken:
                problems.append(f"user {user.name}: uid {user.uid} is taken by {taken[0]}")
            user_group = not user.primary_group and not user.no_user_group
            if user_group and (user.name in known_groups or user.name in made_groups):
                problems.append(
                    f"user {user.name}: a group {user.name!r} exists already; set "
                    "primaryGroup to it, or noUserGroup"
                )
        if user.ssh_keys:
            home = home_of(user, known_users)
            problem = fs.check_parents(f"{home}/.ssh") or _ssh_problem(fs, home)
            if problem:
                problems.append(f"user {user.name}: {problem}")
    return problems


def apply_group(tree: Tree, group: Group) -> None:
    known = groups(tree.fs)
    if not group.should_exist:
        if group.name in known:
            _shadow_tool(tree.root, "groupdel", group.name)
            tree.note(f"removed group {group.name}")
        else:
            tree.note(f"unchanged: no group {group.name}")
        return
    if group.name not in known:
        args = ["groupadd"]
        if group.gid is not None:
            args += ["--gid", str(group.gid)]
        if group.system:
            args.append("--system")
        if group.password_hash:
            args += ["--password", group.password_hash]
        _shadow_tool(tree.root, *args, group.name)
        tree.note(f"created group {group.name}")
    else:
        tree.note(f"unchanged: group {group.name}")


def _useradd(tree: Tree, user: User) -> None:
    args = ["useradd", "--shell", user.shell or "/bin/bash"]
    args.append("--no-create-home" if user.no_create_home else "--create-home")
    if user.uid is not None:
        args += ["--uid", str(user.uid)]
    if user.home_dir is not None:
        args += ["--home-dir", user.home_dir]
    if user.gecos is not None:
        args += ["--comment", user.gecos]
    if user.primary_group is not None:
        args += ["--gid", user.primary_group]
    elif user.no_user_group:
        args.append("--no-user-group")
    else:
        args.append("--user-group")
    if user.groups:
        args += ["--groups", ",".join(user.groups)]
    if user.system:
        args.append("--system")
    if user.no_log_init:
        args.append("--no-log-init")
    if user.password_hash:
        args += ["--password", user.password_hash]
    _shadow_tool(tree.root, *args, user.name)
    tree.note(f"created user {user.name}")


def apply_user(tree: Tree, user: User) -> None:
    existing = accounts(tree.fs)
    if not user.should_exist:
        if user.name in existing:
            _shadow_tool(tree.root, "userdel", user.name)  # the home is kept
            tree.note(f"removed user {user.name}")
        else:
            tree.note(f"unchanged: no user {user.name}")
        return
    if user.name not in existing:
        _useradd(tree, user)
    else:
        _update_user(tree, user, existing[user.name])
    account = accounts(tree.fs)[user.name]
    if user.ssh_keys:
        _authorize(tree, account, user.ssh_keys)


def _update_user(tree: Tree, user: User, account: Account) -> None:
    members = groups(tree.fs)
    for group in user.groups:
        if user.name not in members[group][1]:
            _shadow_tool(tree.root, "usermod", "--append", "--groups", group, user.name)
            tree.note(f"added user {user.name} to group {group}")
    if user.password_hash and _password_hash(tree.fs, user.name) != user.password_hash:
        _shadow_tool(tree.root, "usermod", "--password", user.password_hash, user.name)
        tree.note(f"set the password hash of user {user.name}")
    row = next((r for r in _table(tree.fs, "passwd") if r[0] == user.name), None)
    if row is not None and len(row) >= 7:
        if user.shell is not None and row[6] != user.shell:
            _shadow_tool(tree.root, "usermod", "--shell", user.shell, user.name)
            tree.note(f"set the shell of user {user.name}")
        if user.gecos is not None and row[4] != user.gecos:
            _shadow_tool(tree.root, "usermod", "--comment", user.gecos, user.name)
            tree.note(f"set the comment of user {user.name}")
    if user.primary_group is not None:
        gid = groups(tree.fs)[user.primary_group][0]
        if gid != account.gid:
            _shadow_tool(tree.root, "usermod", "--gid", user.primary_group, user.name)
            tree.note(f"set the primary group of user {user.name}")


def _authorize(tree: Tree, account: Account, keys: tuple[str, ...]) -> None:
    fs = tree.fs
    ssh_dir = f"{account.home}/.ssh"
    authorized = f"{ssh_dir}/authorized_keys"
    problem = _ssh_problem(fs, account.home)
    if problem:  # checked before, but a user may have changed it since
        raise ConfigError(f"user {account.name}: {problem}")
    existing = (fs.read(authorized) or b"").decode("utf-8", "replace").splitlines()
    missing = [key for key in keys if key not in existing]
    if not missing:
        tree.note(f"unchanged: SSH keys of user {account.name}")
        return
    if fs.lstat(ssh_dir) is None:
        fs.mkdir(ssh_dir, 0o700)
    fs.chown(ssh_dir, account.uid, account.gid)  # lchown: a link is never followed
    data = ("\n".join([*existing, *missing]) + "\n").encode()
    fs.write_file(authorized, data, 0o600, account.uid, account.gid)
    tree.note(f"authorized {len(missing)} SSH key(s) for user {account.name}")


def path_owner_ids(fs: Root) -> tuple[dict[str, int], dict[str, int]]:
    """name -> uid and name -> gid, as the tables are now."""
    return (
        {name: a.uid for name, a in accounts(fs).items()},
        {name: g[0] for name, g in groups(fs).items()},
    )
