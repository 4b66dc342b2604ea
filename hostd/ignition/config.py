"""Parse and validate an Ignition config (spec 3.0.0 to 3.4.0) as a whole.

Every field this implementation applies is listed in FIELDS; any other field is
refused by name (an ignored field would be a silent surprise on a fleet). All checks
that need no machine state happen here, so a bad config is refused before anything
is written."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any

from hostd.ignition.dataurl import DataUrlError, decode_data_url

SUPPORTED_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")

# Writable places on a Keel host; everything else is the read-only OS slot.
# /home and /root are links into /var.
WRITABLE_PREFIXES = ("/etc/", "/var/", "/home/", "/root/")
READ_ONLY_HINT = (
    "the OS (/, /usr, /bin, /lib, /boot, /opt, ...) is a read-only image; "
    "a config may write under /etc and /var (and /home, /root, which live on /var)"
)
UNIT_SUFFIXES = (
    ".service", ".socket", ".timer", ".target", ".path", ".mount", ".automount",
    ".swap", ".slice", ".scope", ".device",
)  # fmt: skip

_OWNER: dict[str, type] = {"": dict, ".id": int, ".name": str}
_CONTENTS: dict[str, type] = {"": dict, ".source": str, ".inline": str}


def _nested(prefix: str, table: dict[str, type]) -> dict[str, type]:
    return {prefix + key: kind for key, kind in table.items()}


# Field path ("[]" stands for every list item) -> the JSON type it must have.
FIELDS: dict[str, type] = {
    "ignition": dict,
    "ignition.version": str,
    "passwd": dict,
    "passwd.users": list,
    "passwd.users[]": dict,
    "passwd.users[].name": str,
    "passwd.users[].sshAuthorizedKeys": list,
    "passwd.users[].sshAuthorizedKeys[]": str,
    "passwd.users[].groups": list,
    "passwd.users[].groups[]": str,
    "passwd.users[].passwordHash": str,
    "storage": dict,
    "storage.files": list,
    "storage.files[]": dict,
    "storage.files[].path": str,
    "storage.files[].overwrite": bool,
    "storage.files[].mode": int,
    **_nested("storage.files[].contents", _CONTENTS),
    "storage.files[].append": list,
    **_nested("storage.files[].append[]", _CONTENTS),
    **_nested("storage.files[].user", _OWNER),
    **_nested("storage.files[].group", _OWNER),
    "storage.directories": list,
    "storage.directories[]": dict,
    "storage.directories[].path": str,
    "storage.directories[].overwrite": bool,
    "storage.directories[].mode": int,
    **_nested("storage.directories[].user", _OWNER),
    **_nested("storage.directories[].group", _OWNER),
    "storage.links": list,
    "storage.links[]": dict,
    "storage.links[].path": str,
    "storage.links[].overwrite": bool,
    "storage.links[].target": str,
    "storage.links[].hard": bool,
    **_nested("storage.links[].user", _OWNER),
    **_nested("storage.links[].group", _OWNER),
    "systemd": dict,
    "systemd.units": list,
    "systemd.units[]": dict,
    "systemd.units[].name": str,
    "systemd.units[].enabled": bool,
    "systemd.units[].mask": bool,
    "systemd.units[].contents": str,
    "systemd.units[].dropins": list,
    "systemd.units[].dropins[]": dict,
    "systemd.units[].dropins[].name": str,
    "systemd.units[].dropins[].contents": str,
}

# Keel accepts contents.inline (Butane's name for literal contents) in 3.4.0 configs
# only; upstream Ignition carries literal contents as a data: URL in `source`.
INLINE_SINCE = "3.4.0"


class ConfigError(Exception):
    """The config cannot be applied; the message names the field."""


@dataclass(frozen=True)
class Owner:
    id: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    ssh_keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    password_hash: str | None = None


@dataclass(frozen=True)
class File:
    path: str
    contents: bytes | None = None  # None: keep an existing file, else create it empty
    append: tuple[bytes, ...] = ()
    mode: int | None = None
    overwrite: bool = False
    user: Owner | None = None
    group: Owner | None = None


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int | None = None
    overwrite: bool = False
    user: Owner | None = None
    group: Owner | None = None


@dataclass(frozen=True)
class Link:
    path: str
    target: str
    hard: bool = False
    overwrite: bool = False
    user: Owner | None = None
    group: Owner | None = None


@dataclass(frozen=True)
class Dropin:
    name: str
    contents: str


@dataclass(frozen=True)
class Unit:
    name: str
    enabled: bool | None = None  # None: leave as it is
    mask: bool = False
    contents: str | None = None
    dropins: tuple[Dropin, ...] = ()


@dataclass(frozen=True)
class Config:
    version: str
    users: tuple[User, ...] = ()
    files: tuple[File, ...] = ()
    directories: tuple[Directory, ...] = ()
    links: tuple[Link, ...] = ()
    units: tuple[Unit, ...] = ()

    def summary(self) -> str:
        counts = {
            "user": len(self.users),
            "file": len(self.files),
            "directory": len(self.directories),
            "link": len(self.links),
            "unit": len(self.units),
        }
        return ", ".join(f"{n} {what}(s)" for what, n in counts.items() if n) or "nothing"


def _type_name(kind: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            bool: "true or false"}[kind]  # fmt: skip


def _check_fields(value: Any, schema_path: str, shown: str, problems: list[str]) -> None:
    """Refuse fields not in FIELDS and values of the wrong type, naming each."""
    kind = FIELDS[schema_path] if schema_path else dict
    # bool is an int in Python; a mode of `true` is still wrong.
    wrong_bool = kind is int and isinstance(value, bool)
    if not isinstance(value, kind) or wrong_bool:
        problems.append(f"field '{shown}' must be {_type_name(kind)}")
        return
    if isinstance(value, dict):
        for key, child in value.items():
            child_schema = f"{schema_path}.{key}" if schema_path else key
            child_shown = f"{shown}.{key}" if shown else key
            if child_schema not in FIELDS:
                problems.append(f"unsupported field '{child_shown}'")
            elif child is not None:  # JSON null: the field is absent
                _check_fields(child, child_schema, child_shown, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_fields(item, f"{schema_path}[]", f"{shown}[{index}]", problems)


def _normal_path(raw: str, field: str, problems: list[str], *, writable: bool = True) -> str:
    if not raw.startswith("/"):
        problems.append(f"field '{field}' must be an absolute path, not {raw!r}")
        return raw
    if ".." in raw.split("/"):
        problems.append(f"field '{field}' must not contain '..': {raw!r}")
        return raw
    path = posixpath.normpath(raw)
    if writable and not (path + "/").startswith(WRITABLE_PREFIXES):
        problems.append(f"field '{field}' is {path!r}, on the read-only OS: {READ_ONLY_HINT}")
    elif writable and path in ("/etc", "/var", "/home", "/root"):
        problems.append(f"field '{field}' is {path!r} itself; name something inside it")
    return path


def _contents(
    entry: dict[str, Any] | None, field: str, version: str, problems: list[str]
) -> bytes | None:
    if not entry:
        return None
    source, inline = entry.get("source"), entry.get("inline")
    if inline is not None:
        if version != INLINE_SINCE:
            problems.append(
                f"field '{field}.inline' needs ignition.version {INLINE_SINCE} "
                f"(this config says {version}); use '{field}.source' with a data: URL"
            )
            return None
        if source is not None:
            problems.append(f"field '{field}' has both 'source' and 'inline'; give one")
            return None
        return str(inline).encode()
    if source is None:
        return None
    try:
        return decode_data_url(source)
    except DataUrlError as error:
        problems.append(f"field '{field}.source': {error}")
        return None


def _owner(entry: dict[str, Any] | None) -> Owner | None:
    if not entry:
        return None
    return Owner(id=entry.get("id"), name=entry.get("name"))


def _mode(value: int | None, field: str, problems: list[str]) -> int | None:
    if value is not None and not 0 <= value <= 0o7777:
        problems.append(f"field '{field}' is {value}; modes are decimal numbers 0 to 4095")
    return value


def _users(config: dict[str, Any], problems: list[str]) -> tuple[User, ...]:
    users: list[User] = []
    for index, entry in enumerate((config.get("passwd") or {}).get("users") or []):
        name = entry.get("name")
        if not name:
            problems.append(f"field 'passwd.users[{index}].name' is required")
            continue
        if any(u.name == name for u in users):
            problems.append(f"field 'passwd.users[{index}].name': user {name!r} is listed twice")
        users.append(
            User(
                name=name,
                ssh_keys=tuple(entry.get("sshAuthorizedKeys") or ()),
                groups=tuple(entry.get("groups") or ()),
                password_hash=entry.get("passwordHash"),
            )
        )
    return tuple(users)


def _storage(
    config: dict[str, Any], version: str, problems: list[str]
) -> tuple[tuple[File, ...], tuple[Directory, ...], tuple[Link, ...]]:
    storage = config.get("storage") or {}
    seen: dict[str, str] = {}

    def path_of(entry: dict[str, Any], field: str) -> str | None:
        raw = entry.get("path")
        if not raw:
            problems.append(f"field '{field}.path' is required")
            return None
        path = _normal_path(raw, f"{field}.path", problems)
        if path in seen:
            problems.append(f"field '{field}.path': {path} is also given by {seen[path]}")
        seen[path] = field
        return path

    files = []
    for index, entry in enumerate(storage.get("files") or []):
        field = f"storage.files[{index}]"
        path = path_of(entry, field)
        contents = _contents(entry.get("contents"), f"{field}.contents", version, problems)
        overwrite = bool(entry.get("overwrite"))
        if overwrite and contents is None:
            problems.append(f"field '{field}.overwrite' is true, which needs contents.source")
        append = tuple(
            data
            for i, item in enumerate(entry.get("append") or [])
            if (data := _contents(item, f"{field}.append[{i}]", version, problems)) is not None
        )
        if path is not None:
            files.append(
                File(
                    path=path,
                    contents=contents,
                    append=append,
                    mode=_mode(entry.get("mode"), f"{field}.mode", problems),
                    overwrite=overwrite,
                    user=_owner(entry.get("user")),
                    group=_owner(entry.get("group")),
                )
            )
    directories = []
    for index, entry in enumerate(storage.get("directories") or []):
        field = f"storage.directories[{index}]"
        path = path_of(entry, field)
        if path is not None:
            directories.append(
                Directory(
                    path=path,
                    mode=_mode(entry.get("mode"), f"{field}.mode", problems),
                    overwrite=bool(entry.get("overwrite")),
                    user=_owner(entry.get("user")),
                    group=_owner(entry.get("group")),
                )
            )
    links = []
    for index, entry in enumerate(storage.get("links") or []):
        field = f"storage.links[{index}]"
        path = path_of(entry, field)
        target = entry.get("target")
        if not target:
            problems.append(f"field '{field}.target' is required")
            continue
        hard = bool(entry.get("hard"))
        if hard:  # a hard link's target must be a writable file as well
            target = _normal_path(target, f"{field}.target", problems)
        if path is not None:
            links.append(
                Link(
                    path=path,
                    target=target,
                    hard=hard,
                    overwrite=bool(entry.get("overwrite")),
                    user=_owner(entry.get("user")),
                    group=_owner(entry.get("group")),
                )
            )
    return tuple(files), tuple(directories), tuple(links)


def _units(config: dict[str, Any], problems: list[str]) -> tuple[Unit, ...]:
    units: list[Unit] = []
    for index, entry in enumerate((config.get("systemd") or {}).get("units") or []):
        field = f"systemd.units[{index}]"
        name = entry.get("name") or ""
        if not name.endswith(UNIT_SUFFIXES) or "/" in name:
            problems.append(f"field '{field}.name' is {name!r}, not a systemd unit name")
            continue
        if any(u.name == name for u in units):
            problems.append(f"field '{field}.name': unit {name} is listed twice")
        dropins = []
        for i, dropin in enumerate(entry.get("dropins") or []):
            dropin_name = dropin.get("name") or ""
            if not dropin_name.endswith(".conf") or "/" in dropin_name:
                problems.append(
                    f"field '{field}.dropins[{i}].name' is {dropin_name!r}; "
                    "a drop-in is a file name ending in .conf"
                )
                continue
            dropins.append(Dropin(dropin_name, dropin.get("contents") or ""))
        if entry.get("mask") and entry.get("enabled"):
            problems.append(f"unit {name}: 'mask' and 'enabled' are both true")
        units.append(
            Unit(
                name=name,
                enabled=entry.get("enabled"),
                mask=bool(entry.get("mask")),
                contents=entry.get("contents"),
                dropins=tuple(dropins),
            )
        )
    return tuple(units)


def parse_config(raw: bytes) -> Config:
    """The whole config, validated; ConfigError lists every problem found."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError("the config must be a JSON object")
    ignition = document.get("ignition")
    version = ignition.get("version") if isinstance(ignition, dict) else None
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"field 'ignition.version' is {version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    problems: list[str] = []
    _check_fields(document, "", "", problems)
    if problems:  # shapes are wrong: reading values would only add noise
        raise ConfigError("; ".join(problems))
    users = _users(document, problems)
    files, directories, links = _storage(document, version, problems)
    units = _units(document, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(version, users, files, directories, links, units)
