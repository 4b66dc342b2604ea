"""Users from passwd.users: created with shadow's useradd (under --prefix for a root
other than /), supplementary groups, password hash and authorized SSH keys."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hostd.ignition.config import ConfigError, User
from hostd.ignition.tree import Tree


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def _table(root: Path, name: str) -> list[list[str]]:
    try:
        text = (root / "etc" / name).read_text()
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def accounts(root: Path) -> dict[str, Account]:
    return {
        row[0]: Account(row[0], int(row[2]), int(row[3]), row[5])
        for row in _table(root, "passwd")
        if len(row) >= 7
    }


def groups(root: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Group name -> (gid, members)."""
    return {
        row[0]: (int(row[2]), tuple(m for m in row[3].split(",") if m))
        for row in _table(root, "group")
        if len(row) >= 4
    }


def _password_hash(root: Path, name: str) -> str | None:
    return next((row[1] for row in _table(root, "shadow") if row and row[0] == name), None)


def _shadow_tool(root: Path, *args: str) -> None:
    prefix = [] if root == Path("/") else ["--prefix", str(root)]
    command = [args[0], *prefix, *args[1:]]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")


def check_users(root: Path, users: tuple[User, ...]) -> list[str]:
    """Problems that would stop these users from being applied (before anything is)."""
    known = groups(root)
    return [
        f"user {user.name}: group {group!r} does not exist on this host"
        for user in users
        for group in user.groups
        if group not in known
    ]


def home_of(root: Path, account: Account) -> Path:
    return root / account.home.lstrip("/")


def apply_user(tree: Tree, user: User) -> None:
    root, log = tree.root, tree
    existing = accounts(root)
    if user.name not in existing:
        _shadow_tool(root, "useradd", "--create-home", "--shell", "/bin/bash", "--user-group",
                     user.name)  # fmt: skip
        log.note(f"created user {user.name}")
    account = accounts(root)[user.name]
    members = groups(root)
    for group in user.groups:
        if user.name not in members[group][1]:
            _shadow_tool(root, "usermod", "--append", "--groups", group, user.name)
            log.note(f"added user {user.name} to group {group}")
    if user.password_hash and _password_hash(root, user.name) != user.password_hash:
        _shadow_tool(root, "usermod", "--password", user.password_hash, user.name)
        log.note(f"set the password hash of user {user.name}")
    if user.ssh_keys:
        _authorize(root, account, user.ssh_keys, log)


def _authorize(root: Path, account: Account, keys: tuple[str, ...], log: Tree) -> None:
    ssh_dir = home_of(root, account) / ".ssh"
    authorized = ssh_dir / "authorized_keys"
    existing = authorized.read_text().splitlines() if authorized.exists() else []
    missing = [key for key in keys if key not in existing]
    if not missing:
        log.note(f"unchanged: SSH keys of user {account.name}")
        return
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized.write_text("\n".join([*existing, *missing]) + "\n")
    authorized.chmod(0o600)
    for path in (ssh_dir, authorized):
        os.chown(path, account.uid, account.gid)
    log.note(f"authorized {len(missing)} SSH key(s) for user {account.name}")
