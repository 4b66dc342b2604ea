"""First-boot provisioning: apply an Ignition (spec v3) config before sshd and the
container engine start.

Sources, first found wins: QEMU fw_cfg under Keel's key, then under Fedora CoreOS's
key (so existing CoreOS launch scripts work), then a file on the ESP (bare metal),
then a config baked into the image.

This module implements the part of the spec a container host needs; any other field
is refused by name rather than silently ignored. A config that fails leaves the
machine booting: the reason goes to the console and the journal and into the state
file that `keelctl status` reads."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FW_CFG = Path("/sys/firmware/qemu_fw_cfg/by_name")
CONFIG_SOURCES = (
    FW_CFG / "opt/org.keel/config/raw",
    FW_CFG / "opt/com.coreos/config/raw",
    Path("/efi/keel/provision.ign"),
    Path("/usr/lib/keel/provision.ign"),
)
STATE_FILE = Path("/var/lib/keel/provisioned.json")
SUPPORTED_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")

# Fields this implementation applies, as dotted paths ("[]" = every list item).
SUPPORTED_FIELDS = {
    "ignition", "ignition.version",
    "passwd", "passwd.users", "passwd.users[]",
    "passwd.users[].name", "passwd.users[].sshAuthorizedKeys", "passwd.users[].groups",
    "passwd.users[].passwordHash",
}  # fmt: skip


class ConfigError(Exception):
    """The config cannot be applied; the message names the field."""


@dataclass(frozen=True)
class User:
    name: str
    ssh_keys: tuple[str, ...]
    groups: tuple[str, ...]
    password_hash: str | None


def _walk(value: Any, path: str) -> list[str]:
    """Every field path in the config, list items as []."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _walk(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        for item in value:
            found += _walk(item, f"{path}[]")
    return found


def parse_config(raw: bytes) -> list[User]:
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError("the config must be a JSON object")
    version = config.get("ignition", {}).get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"field 'ignition.version' is {version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    unsupported = sorted({p for p in _walk(config, "") if p not in SUPPORTED_FIELDS})
    if unsupported:
        raise ConfigError(f"unsupported field(s): {', '.join(unsupported)}")
    users = []
    for index, entry in enumerate(config.get("passwd", {}).get("users", [])):
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"field 'passwd.users.{index}.name' is required")
        users.append(
            User(
                name=name,
                ssh_keys=tuple(entry.get("sshAuthorizedKeys", [])),
                groups=tuple(entry.get("groups", [])),
                password_hash=entry.get("passwordHash"),
            )
        )
    return users


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def apply_user(user: User) -> None:
    try:
        account = pwd.getpwnam(user.name)
    except KeyError:
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--user-group", user.name)
        account = pwd.getpwnam(user.name)
    for group in user.groups:
        _run("usermod", "--append", "--groups", group, user.name)
    if user.password_hash:
        _run("usermod", "--password", user.password_hash, user.name)
    if user.ssh_keys:
        ssh_dir = Path(account.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        existing = keys.read_text().splitlines() if keys.exists() else []
        merged = list(dict.fromkeys([*existing, *user.ssh_keys]))
        keys.write_text("\n".join(merged) + "\n")
        for path in (ssh_dir, keys):
            os.chown(path, account.pw_uid, account.pw_gid)
        keys.chmod(0o600)


def find_config() -> tuple[Path, bytes] | None:
    for source in CONFIG_SOURCES:
        try:
            return source, source.read_bytes()
        except OSError:
            continue
    return None


def write_state(state: dict[str, Any]) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    partial = STATE_FILE.with_suffix(".partial")
    with partial.open("w") as handle:
        json.dump(state, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(STATE_FILE)


def main() -> int:
    found = find_config()
    state: dict[str, Any] = {"time": int(time.time())}
    if found is None:
        print("keel-provision: no provisioning config found; nothing to apply")
        state.update(result="none")
        write_state(state)
        return 0
    source, raw = found
    state.update(source=str(source), sha256=hashlib.sha256(raw).hexdigest())
    try:
        users = parse_config(raw)
        for user in users:
            apply_user(user)
    except (ConfigError, subprocess.CalledProcessError) as error:
        message = f"keel-provision: config from {source} was NOT applied: {error}"
        print(message, file=sys.stderr)
        state.update(result="failed", error=str(error))
        write_state(state)
        # Exit 0: a bad config must not fail the boot; the reason is logged and kept.
        return 0
    print(f"keel-provision: applied config from {source} ({len(users)} user(s))")
    state.update(result="applied", users=[u.name for u in users])
    write_state(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
