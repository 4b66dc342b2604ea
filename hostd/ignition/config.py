"""Parse and validate an Ignition config (spec 3.0.0 to 3.5.0) as a whole.

Every field this implementation applies is listed in schema.FIELDS; any other field is
refused by name, with the reason (an ignored field would be a silent surprise on a
fleet). All checks that need no machine state happen here, so a bad config is refused
before anything is written; apply.check() adds those that need the machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hostd.ignition import names, schema
from hostd.ignition.contents import INLINE_SINCE, MAX_FILE_BYTES, resource
from hostd.ignition.disks import Disk, Filesystem, Partition, parse_storage_devices
from hostd.ignition.document import load
from hostd.ignition.errors import ConfigError
from hostd.ignition.kernelargs import NO_KERNEL_ARGUMENTS, KernelArguments, kernel_arguments
from hostd.ignition.paths import (
    READ_ONLY_HINT,
    WRITABLE_PREFIXES,
    clean,
    conflicts,
    path_problem,
)
from hostd.ignition.references import references
from hostd.ignition.remote import Pending, Remote
from hostd.ignition.schema import FIELDS

__all__ = [
    "FIELDS", "INLINE_SINCE", "READ_ONLY_HINT", "SUPPORTED_VERSIONS", "UNIT_SUFFIXES",
    "WRITABLE_PREFIXES", "Config", "ConfigError", "Directory", "Disk", "Dropin", "File",
    "Filesystem", "Group", "Link", "Owner", "Partition", "Unit", "User", "parse_config",
]  # fmt: skip

SUPPORTED_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0")
UNIT_SUFFIXES = names.UNIT_SUFFIXES
LOCAL_UNITS = "/etc/systemd/system"
# All decoded contents together: the config is held in memory while it is applied.
MAX_TOTAL_BYTES = 4 * MAX_FILE_BYTES
# passwd/group/shadow are ':'-separated lines: these must not end a field or a line.
_SEPARATORS = (":", "\n", "\r")


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
    uid: int | None = None
    gecos: str | None = None
    home_dir: str | None = None
    no_create_home: bool = False
    primary_group: str | None = None
    no_user_group: bool = False
    no_log_init: bool = False
    shell: str | None = None
    system: bool = False
    should_exist: bool = True


@dataclass(frozen=True)
class Group:
    name: str
    gid: int | None = None
    password_hash: str | None = None
    system: bool = False
    should_exist: bool = True


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
    groups: tuple[Group, ...] = ()
    # http(s) contents not fetched yet: their files hold b"" until resolve.py fills
    # them in; apply refuses a config that still has any.
    remote: tuple[Pending, ...] = ()
    kernel_arguments: KernelArguments = NO_KERNEL_ARGUMENTS
    disks: tuple[Disk, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()

    def summary(self) -> str:
        counts = {
            "disk": len(self.disks),
            "filesystem": len(self.filesystems),
            "group": len(self.groups),
            "user": len(self.users),
            "file": len(self.files),
            "directory": len(self.directories),
            "link": len(self.links),
            "unit": len(self.units),
            "kernel argument": len(self.kernel_arguments.should_exist)
            + len(self.kernel_arguments.should_not_exist),
        }
        return ", ".join(f"{n} {what}(s)" for what, n in counts.items() if n) or "nothing"


def _type_name(kind: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            bool: "true or false"}[kind]  # fmt: skip


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _check_fields(document: dict[str, Any], version: str, problems: list[str]) -> None:
    """Refuse fields not in FIELDS and values of the wrong type, naming each.
    Iterative: document.load() already bounded the depth, this needs no recursion."""
    stack: list[tuple[Any, str, str]] = [(document, "", "")]
    while stack:
        value, schema_path, shown = stack.pop()
        kind = FIELDS[schema_path] if schema_path else dict
        # bool is an int in Python; a mode of `true` is still wrong.
        wrong_bool = kind is int and isinstance(value, bool)
        if not isinstance(value, kind) or wrong_bool:
            problems.append(f"field '{shown}' must be {_type_name(kind)}")
            continue
        since = schema.SINCE.get(schema_path)
        if since and _version_tuple(version) < _version_tuple(since):
            problems.append(f"field '{shown}' needs ignition.version {since} or later")
        if isinstance(value, dict):
            for key, child in value.items():
                child_schema = f"{schema_path}.{key}" if schema_path else key
                child_shown = f"{shown}.{key}" if shown else key
                if child_schema in FIELDS:
                    if child is not None:  # JSON null: the field is absent
                        stack.append((child, child_schema, child_shown))
                    continue
                reason = schema.refusal(child_schema)
                under_ignition = child_schema.startswith(schema.EMPTY_ALLOWED_UNDER)
                if reason and under_ignition and schema.asks_for_nothing(child):
                    continue
                if reason:
                    problems.append(f"unsupported field '{child_shown}': {reason}")
                else:
                    problems.append(
                        f"unsupported field '{child_shown}' (not part of Ignition spec {version})"
                    )
        elif isinstance(value, list):
            stack.extend(
                (item, f"{schema_path}[]", f"{shown}[{index}]")
                for index, item in reversed(list(enumerate(value)))
            )


def _path(raw: str, field: str, problems: list[str], *, writable: bool = True) -> str:
    problem = path_problem(raw, field, writable=writable)
    if problem:
        problems.append(problem)
    return clean(raw)


def _owner(entry: dict[str, Any] | None, field: str, problems: list[str]) -> Owner | None:
    if not entry:
        return None
    owner = Owner(id=entry.get("id"), name=entry.get("name"))
    if owner.id is not None and (problem := names.id_problem(owner.id, f"{field}.id")):
        problems.append(problem)
    if owner.name is not None:
        problem = names.account_problem(owner.name, f"field '{field}.name':")
        if problem:
            problems.append(problem)
    if owner.id is not None and owner.name is not None:
        problems.append(f"field '{field}' has both 'id' and 'name'; give one")
    return owner


def _mode(value: int | None, field: str, problems: list[str]) -> int | None:
    if value is not None and not 0 <= value <= 0o7777:
        problems.append(f"field '{field}' is {value}; modes are decimal numbers 0 to 4095")
    return value


def _text_field(value: str | None, field: str, problems: list[str]) -> str | None:
    """A string that lands in a passwd/shadow/group line or on a command line."""
    if value is not None and any(sep in value for sep in _SEPARATORS):
        problems.append(f"field '{field}' must not contain ':' or line breaks")
    elif value is not None and len(value) > 4096:
        problems.append(f"field '{field}' is longer than 4096 characters")
    return value


def _account_name(entry: dict[str, Any], field: str, what: str, problems: list[str]) -> str:
    name = entry.get("name")
    if not name:
        problems.append(f"field '{field}.name' is required")
        return ""
    problem = names.account_problem(name, f"field '{field}.name': {what}")
    if problem:
        problems.append(problem)
    return str(name)


def _groups(config: dict[str, Any], problems: list[str]) -> tuple[Group, ...]:
    groups: list[Group] = []
    for index, entry in enumerate((config.get("passwd") or {}).get("groups") or []):
        field = f"passwd.groups[{index}]"
        name = _account_name(entry, field, "group", problems)
        if not name:
            continue
        if any(g.name == name for g in groups):
            problems.append(f"field '{field}.name': group {name!r} is listed twice")
        gid = entry.get("gid")
        if gid is not None and (problem := names.id_problem(gid, f"{field}.gid")):
            problems.append(problem)
        group = Group(
            name=name,
            gid=gid,
            password_hash=_text_field(entry.get("passwordHash"), f"{field}.passwordHash",
                                      problems),
            system=bool(entry.get("system")),
            should_exist=entry.get("shouldExist") is not False,
        )  # fmt: skip
        if not group.should_exist and (group.gid is not None or group.password_hash):
            problems.append(f"field '{field}': shouldExist false takes no other field")
        groups.append(group)
    return tuple(groups)


def _users(config: dict[str, Any], problems: list[str]) -> tuple[User, ...]:
    users: list[User] = []
    for index, entry in enumerate((config.get("passwd") or {}).get("users") or []):
        field = f"passwd.users[{index}]"
        name = _account_name(entry, field, "user", problems)
        if not name:
            continue
        if any(u.name == name for u in users):
            problems.append(f"field '{field}.name': user {name!r} is listed twice")
        uid = entry.get("uid")
        if uid is not None and (problem := names.id_problem(uid, f"{field}.uid")):
            problems.append(problem)
        keys = tuple(entry.get("sshAuthorizedKeys") or ())
        for i, key in enumerate(keys):
            if "\n" in key or "\r" in key:
                problems.append(f"field '{field}.sshAuthorizedKeys[{i}]' holds a line break")
        home = entry.get("homeDir")
        if home is not None:
            home = _path(home, f"{field}.homeDir", problems, writable=False)
            _text_field(home, f"{field}.homeDir", problems)
        shell = entry.get("shell")
        if shell is not None:
            shell = _path(shell, f"{field}.shell", problems, writable=False)
            _text_field(shell, f"{field}.shell", problems)
        primary = entry.get("primaryGroup")
        if primary is not None:
            problem = names.account_problem(primary, f"field '{field}.primaryGroup':")
            if problem:
                problems.append(problem)
        supplementary = tuple(entry.get("groups") or ())
        for i, group in enumerate(supplementary):
            problem = names.account_problem(group, f"field '{field}.groups[{i}]':")
            if problem:
                problems.append(problem)
        user = User(
            name=name,
            ssh_keys=keys,
            groups=supplementary,
            password_hash=_text_field(entry.get("passwordHash"), f"{field}.passwordHash",
                                      problems),
            uid=uid,
            gecos=_text_field(entry.get("gecos"), f"{field}.gecos", problems),
            home_dir=home,
            no_create_home=bool(entry.get("noCreateHome")),
            primary_group=primary,
            no_user_group=bool(entry.get("noUserGroup")),
            no_log_init=bool(entry.get("noLogInit")),
            shell=shell,
            system=bool(entry.get("system")),
            should_exist=entry.get("shouldExist") is not False,
        )  # fmt: skip
        if not user.should_exist:
            given = [k for k in entry if k not in ("name", "shouldExist") and entry[k]]
            if given:
                problems.append(
                    f"field '{field}': shouldExist false takes no other field (has "
                    f"{', '.join(sorted(given))})"
                )
            if name == "root":
                problems.append(f"field '{field}': user root cannot be removed")
        if user.primary_group and user.no_user_group:
            problems.append(f"field '{field}': give primaryGroup or noUserGroup, not both")
        users.append(user)
    return tuple(users)


def _storage(
    config: dict[str, Any], version: str, problems: list[str], pending: list[Pending]
) -> tuple[tuple[File, ...], tuple[Directory, ...], tuple[Link, ...]]:
    storage = config.get("storage") or {}
    return (
        _files(storage.get("files") or [], version, problems, pending),
        _directories(storage.get("directories") or [], problems),
        _links(storage.get("links") or [], problems),
    )


def _entry_path(entry: dict[str, Any], field: str, problems: list[str]) -> str | None:
    raw = entry.get("path")
    if not raw:
        problems.append(f"field '{field}.path' is required")
        return None
    return _path(raw, f"{field}.path", problems)


def _files(
    entries: list[Any], version: str, problems: list[str], pending: list[Pending]
) -> tuple[File, ...]:
    files: list[File] = []
    total = 0
    for index, entry in enumerate(entries):
        field = f"storage.files[{index}]"
        path = _entry_path(entry, field, problems)
        found = resource(entry.get("contents"), f"{field}.contents", version, problems)
        if isinstance(found, Remote):  # fetched at first boot; b"" holds its place
            pending.append(Pending(len(files), None, found))
            found = b""
        contents = found
        overwrite = bool(entry.get("overwrite"))
        if overwrite and contents is None:
            problems.append(f"field '{field}.overwrite' is true, which needs contents.source")
        fragments: list[bytes] = []
        for i, item in enumerate(entry.get("append") or []):
            data = resource(item, f"{field}.append[{i}]", version, problems)
            if isinstance(data, Remote):
                pending.append(Pending(len(files), len(fragments), data))
                data = b""
            if data is not None:
                fragments.append(data)
        append = tuple(fragments)
        total += len(contents or b"") + sum(len(data) for data in append)
        if path is not None:
            files.append(
                File(
                    path=path,
                    contents=contents,
                    append=append,
                    mode=_mode(entry.get("mode"), f"{field}.mode", problems),
                    overwrite=overwrite,
                    user=_owner(entry.get("user"), f"{field}.user", problems),
                    group=_owner(entry.get("group"), f"{field}.group", problems),
                )
            )
    if total > MAX_TOTAL_BYTES:
        problems.append(f"the files hold {total} bytes in all; at most {MAX_TOTAL_BYTES}")
    return tuple(files)


def _directories(entries: list[Any], problems: list[str]) -> tuple[Directory, ...]:
    directories = []
    for index, entry in enumerate(entries):
        field = f"storage.directories[{index}]"
        path = _entry_path(entry, field, problems)
        if path is not None:
            directories.append(
                Directory(
                    path=path,
                    mode=_mode(entry.get("mode"), f"{field}.mode", problems),
                    overwrite=bool(entry.get("overwrite")),
                    user=_owner(entry.get("user"), f"{field}.user", problems),
                    group=_owner(entry.get("group"), f"{field}.group", problems),
                )
            )
    return tuple(directories)


def _links(entries: list[Any], problems: list[str]) -> tuple[Link, ...]:
    links = []
    for index, entry in enumerate(entries):
        field = f"storage.links[{index}]"
        path = _entry_path(entry, field, problems)
        target = entry.get("target")
        if not target:
            problems.append(f"field '{field}.target' is required")
            continue
        hard = bool(entry.get("hard"))
        if hard:  # a hard link's target must be a writable file as well
            target = _path(target, f"{field}.target", problems)
        elif len(target.encode()) >= 4096:
            problems.append(f"field '{field}.target' is longer than 4096 bytes")
        if path is not None:
            links.append(
                Link(
                    path=path,
                    target=target,
                    hard=hard,
                    overwrite=bool(entry.get("overwrite")),
                    user=_owner(entry.get("user"), f"{field}.user", problems),
                    group=_owner(entry.get("group"), f"{field}.group", problems),
                )
            )
    return tuple(links)


def _setting(text: str, section: str, key: str) -> str | None:
    """The last value of key in [section] of a unit's text (None if not set)."""
    found, current = None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line.partition("=")[0].strip() == key:
            found = line.partition("=")[2].strip()
    return found


def _mount_name_problem(name: str, contents: str | None) -> str | None:
    """systemd loads a mount (swap) unit only under the escaped name of its Where=
    (What=): var-lib-docker.mount for Where=/var/lib/docker."""
    suffix = name[name.rfind(".") :]
    key = {".mount": ("Mount", "Where"), ".swap": ("Swap", "What")}.get(suffix)
    if key is None or contents is None:
        return None
    where = _setting(contents, *key)
    if not where or not where.startswith("/"):
        return None
    wanted = names.path_unit_name(where, suffix)
    if wanted != name:
        return f"{key[1]}={where} needs the unit name {wanted} (systemd refuses another)"
    return None


def _units(config: dict[str, Any], problems: list[str]) -> tuple[Unit, ...]:
    units: list[Unit] = []
    for index, entry in enumerate((config.get("systemd") or {}).get("units") or []):
        field = f"systemd.units[{index}]"
        name = entry.get("name") or ""
        problem = names.unit_problem(name)
        if problem:
            problems.append(f"field '{field}.name': {problem}")
            continue
        if any(u.name == name for u in units):
            problems.append(f"field '{field}.name': unit {name} is listed twice")
        dropins: list[Dropin] = []
        for i, dropin in enumerate(entry.get("dropins") or []):
            dropin_name = dropin.get("name") or ""
            problem = names.dropin_problem(dropin_name)
            if problem:
                problems.append(f"field '{field}.dropins[{i}].name': {problem}")
                continue
            if any(d.name == dropin_name for d in dropins):
                problems.append(f"field '{field}.dropins[{i}].name' is listed twice")
            dropins.append(Dropin(dropin_name, dropin.get("contents") or ""))
        if (problem := _mount_name_problem(name, entry.get("contents"))) is not None:
            problems.append(f"field '{field}.name': {problem}")
        if entry.get("mask") and entry.get("enabled"):
            problems.append(f"unit {name}: 'mask' and 'enabled' are both true")
        if entry.get("mask") and entry.get("contents") is not None:
            problems.append(f"unit {name}: 'mask' and 'contents' cannot both be given")
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


def planned_paths(
    files: tuple[File, ...],
    directories: tuple[Directory, ...],
    links: tuple[Link, ...],
    units: tuple[Unit, ...],
    filesystems: tuple[Filesystem, ...] = (),
) -> list[tuple[str, str, str]]:
    """(path, kind, what) of every node the config makes, and every mount point, for
    conflicts()."""
    entries = [
        (fs.mount_point, "mount", f"storage.filesystems[{i}]")
        for i, fs in enumerate(filesystems)
        if fs.mount_point is not None
    ]
    entries += [(d.path, "dir", f"storage.directories[{i}]") for i, d in enumerate(directories)]
    entries += [(f.path, "file", f"storage.files[{i}]") for i, f in enumerate(files)]
    entries += [(k.path, "link", f"storage.links[{i}]") for i, k in enumerate(links)]
    for unit in units:
        path = f"{LOCAL_UNITS}/{unit.name}"
        if unit.contents is not None or unit.mask:
            entries.append((path, "link" if unit.mask else "file", f"unit {unit.name}"))
        for dropin in unit.dropins:
            entries.append(
                (f"{path}.d/{dropin.name}", "file", f"unit {unit.name} drop-in {dropin.name}")
            )
    return entries


def parse_config(raw: bytes) -> Config:
    """The whole config, validated; ConfigError lists every problem found.
    Never raises anything else, whatever the bytes."""
    try:
        return _parse(raw)
    except ConfigError:
        raise
    except Exception as error:  # a check missed a shape: still a refusal, not a crash
        raise ConfigError(
            f"the config could not be read: {type(error).__name__}: {error}"
        ) from None


def _parse(raw: bytes) -> Config:
    document = load(raw)
    ignition = document.get("ignition")
    version = ignition.get("version") if isinstance(ignition, dict) else None
    if version not in SUPPORTED_VERSIONS:
        shown = version if isinstance(version, str) and len(version) < 40 else "missing"
        raise ConfigError(
            f"field 'ignition.version' is {shown!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        )
    problems: list[str] = []
    _check_fields(document, version, problems)
    if problems:  # shapes are wrong: reading values would only add noise
        raise ConfigError("; ".join(problems))
    timeouts = ignition.get("timeouts") or {} if isinstance(ignition, dict) else {}
    for key, value in timeouts.items():
        if isinstance(value, int) and value < 0:
            problems.append(f"field 'ignition.timeouts.{key}' must not be negative")
    references(document, version, problems)  # shapes only: nothing is fetched here
    groups = _groups(document, problems)
    users = _users(document, problems)
    pending: list[Pending] = []
    files, directories, links = _storage(document, version, problems, pending)
    disks, filesystems = parse_storage_devices(document.get("storage") or {}, version, problems)
    units = _units(document, problems)
    arguments = kernel_arguments(document, problems)
    problems += conflicts(planned_paths(files, directories, links, units, filesystems))
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(
        version, users, files, directories, links, units, groups, tuple(pending), arguments,
        disks, filesystems,
    )  # fmt: skip
