"""Names and ids that end up on a command line (useradd, systemctl) or in a file name,
checked so none can be read as an option or break the tool: shadow's user and group
name rules, systemd's unit name rules, the id range the kernel allows."""

from __future__ import annotations

import re

# uid_t/gid_t are 32 bits and (uid_t)-1 means "no change" to chown: 0 .. 2^32-2.
MAX_ID = 2**32 - 2
# shadow's portable rule (useradd's NAME_REGEX default), up to 32 characters, an
# optional trailing $ for Samba machine accounts; never starts with '-'.
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,30}[a-z0-9_.$-]?", re.ASCII)
UNIT_SUFFIXES = (
    ".service", ".socket", ".timer", ".target", ".path", ".mount", ".automount",
    ".swap", ".slice", ".scope", ".device",
)  # fmt: skip
# systemd's unit name rule: letters, digits, ":-_.\" and one '@' before the suffix.
_UNIT = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?", re.ASCII)
_DROPIN = re.compile(r"[A-Za-z0-9:_.\\@-]+\.conf", re.ASCII)
UNIT_NAME_MAX = 255


def account_problem(name: str, what: str) -> str | None:
    """Why name cannot be a user or group name (None if it can)."""
    if not _ACCOUNT.fullmatch(name) or name.isdigit():
        return (
            f"{what} {name!r} is not a valid name: lower-case letters, digits, '_', '-' "
            "and '.', starting with a letter or '_', at most 32 characters"
        )
    return None


def id_problem(value: int, field: str) -> str | None:
    if not 0 <= value <= MAX_ID:
        return f"field '{field}' is {value}; ids are 0 to {MAX_ID}"
    return None


def unit_problem(name: str) -> str | None:
    """Why name is not a unit name systemd accepts (None if it is)."""
    stem = name[: name.rfind(".")] if "." in name else ""
    if (
        len(name) > UNIT_NAME_MAX
        or not name.endswith(UNIT_SUFFIXES)
        or not stem
        or name.startswith(("-", "."))
        or not _UNIT.fullmatch(stem)
    ):
        return (
            f"{name!r} is not a systemd unit name: letters, digits and ':-_.\\' with at "
            f"most one '@', ending in one of {', '.join(UNIT_SUFFIXES)}, not starting "
            f"with '-' or '.', at most {UNIT_NAME_MAX} characters"
        )
    return None


def dropin_problem(name: str) -> str | None:
    if len(name) > UNIT_NAME_MAX or name.startswith(("-", ".")) or not _DROPIN.fullmatch(name):
        return f"{name!r} is not a drop-in name: a file name ending in .conf"
    return None


# Bytes systemd leaves as they are in an escaped unit name; '/' becomes '-'.
_UNESCAPED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def path_unit_name(path: str, suffix: str, *, go_style: bool = False) -> str:
    """The unit name systemd requires for a mount or swap unit of path, as
    `systemd-escape --path --suffix=SUFFIX PATH` prints it: /var/lib/docker ->
    var-lib-docker.mount, /dev/disk/by-label/x -> dev-disk-by\\x2dlabel-x.swap.

    go_style: as go-systemd (which butane uses) writes it, `\\x9` rather than
    systemd's `\\x09` for a byte below 0x10; the same for any other path."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return f"-{suffix}"
    escaped = []
    for index, byte in enumerate("/".join(parts).encode()):
        if byte == ord("/"):
            escaped.append("-")
        elif byte in _UNESCAPED and not (index == 0 and byte == ord(".")):
            escaped.append(chr(byte))
        else:
            escaped.append(f"\\x{byte:x}" if go_style else f"\\x{byte:02x}")
    return "".join(escaped) + suffix
