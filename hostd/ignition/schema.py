"""Which Ignition fields Keel applies (FIELDS, with the JSON type each must have) and,
for the spec's other fields, why they are refused (REFUSED). A field in neither is not
part of Ignition spec 3.x at all. Kept apart from parsing so the table is one place
to read (docs/provisioning.md mirrors it)."""

from __future__ import annotations

from typing import Any

# Oldest spec version a field exists in, where that is not 3.0.0: a 3.1.0 config
# using a 3.2.0 field is refused, as Ignition would.
SINCE = {
    "passwd.users[].shouldExist": "3.2.0",
    "passwd.groups[].shouldExist": "3.2.0",
    "kernelArguments": "3.3.0",
    "storage.disks[].partitions[].resize": "3.2.0",
    "storage.filesystems[].mountOptions": "3.1.0",
}
# Every resource (file contents, append, config references, CAs) may carry headers.
_RESOURCES = (
    "storage.files[].contents",
    "storage.files[].append[]",
    "ignition.config.merge[]",
    "ignition.config.replace",
    "ignition.security.tls.certificateAuthorities[]",
)
SINCE.update({f"{resource}.httpHeaders": "3.1.0" for resource in _RESOURCES})

_OWNER: dict[str, type] = {"": dict, ".id": int, ".name": str}
_RESOURCE: dict[str, type] = {
    "": dict,
    ".source": str,
    ".inline": str,  # Keel extension, see config.INLINE_SINCE
    ".compression": str,
    ".verification": dict,
    ".verification.hash": str,
    ".httpHeaders": list,  # only for http(s) sources, see remote.py
    ".httpHeaders[]": dict,
    ".httpHeaders[].name": str,
    ".httpHeaders[].value": str,
}


def _nested(prefix: str, table: dict[str, type]) -> dict[str, type]:
    return {prefix + key: kind for key, kind in table.items()}


def _node(prefix: str) -> dict[str, type]:
    """Fields every storage node (file, directory, link) has."""
    return {
        prefix: dict,
        f"{prefix}.path": str,
        f"{prefix}.overwrite": bool,
        **_nested(f"{prefix}.user", _OWNER),
        **_nested(f"{prefix}.group", _OWNER),
    }


# Field path ("[]" stands for every list item) -> the JSON type it must have.
FIELDS: dict[str, type] = {
    "ignition": dict,
    "ignition.version": str,
    # Fetched at first boot by resolve.py, after the whole config validated.
    "ignition.config": dict,
    "ignition.config.merge": list,
    **_nested("ignition.config.merge[]", _RESOURCE),
    **_nested("ignition.config.replace", _RESOURCE),
    "ignition.security": dict,
    "ignition.security.tls": dict,
    "ignition.security.tls.certificateAuthorities": list,
    **_nested("ignition.security.tls.certificateAuthorities[]", _RESOURCE),
    "ignition.timeouts": dict,  # for http(s) fetches, see fetch.py
    "ignition.timeouts.httpResponseHeaders": int,
    "ignition.timeouts.httpTotal": int,
    "passwd": dict,
    "passwd.users": list,
    "passwd.users[]": dict,
    "passwd.users[].name": str,
    "passwd.users[].passwordHash": str,
    "passwd.users[].sshAuthorizedKeys": list,
    "passwd.users[].sshAuthorizedKeys[]": str,
    "passwd.users[].uid": int,
    "passwd.users[].gecos": str,
    "passwd.users[].homeDir": str,
    "passwd.users[].noCreateHome": bool,
    "passwd.users[].primaryGroup": str,
    "passwd.users[].groups": list,
    "passwd.users[].groups[]": str,
    "passwd.users[].noUserGroup": bool,
    "passwd.users[].noLogInit": bool,
    "passwd.users[].shell": str,
    "passwd.users[].shouldExist": bool,
    "passwd.users[].system": bool,
    "passwd.groups": list,
    "passwd.groups[]": dict,
    "passwd.groups[].name": str,
    "passwd.groups[].gid": int,
    "passwd.groups[].passwordHash": str,
    "passwd.groups[].shouldExist": bool,
    "passwd.groups[].system": bool,
    "storage": dict,
    "storage.files": list,
    **_node("storage.files[]"),
    "storage.files[].mode": int,
    **_nested("storage.files[].contents", _RESOURCE),
    "storage.files[].append": list,
    **_nested("storage.files[].append[]", _RESOURCE),
    "storage.directories": list,
    **_node("storage.directories[]"),
    "storage.directories[].mode": int,
    "storage.links": list,
    **_node("storage.links[]"),
    "storage.links[].target": str,
    "storage.links[].hard": bool,
    # Extra data disks (disks.py checks them, storage.py partitions and formats).
    "storage.disks": list,
    "storage.disks[]": dict,
    "storage.disks[].device": str,
    "storage.disks[].wipeTable": bool,
    "storage.disks[].partitions": list,
    "storage.disks[].partitions[]": dict,
    "storage.disks[].partitions[].number": int,
    "storage.disks[].partitions[].label": str,
    "storage.disks[].partitions[].sizeMiB": int,
    "storage.disks[].partitions[].startMiB": int,
    "storage.disks[].partitions[].typeGuid": str,
    "storage.disks[].partitions[].guid": str,
    "storage.disks[].partitions[].wipePartitionEntry": bool,
    "storage.disks[].partitions[].shouldExist": bool,
    "storage.disks[].partitions[].resize": bool,
    "storage.filesystems": list,
    "storage.filesystems[]": dict,
    "storage.filesystems[].device": str,
    "storage.filesystems[].format": str,
    "storage.filesystems[].path": str,
    "storage.filesystems[].wipeFilesystem": bool,
    "storage.filesystems[].label": str,
    "storage.filesystems[].uuid": str,
    "storage.filesystems[].options": list,
    "storage.filesystems[].options[]": str,
    "storage.filesystems[].mountOptions": list,
    "storage.filesystems[].mountOptions[]": str,
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
    # Applied by hostd/provision.py to the booted loader entry, kept for updates.
    "kernelArguments": dict,
    "kernelArguments.shouldExist": list,
    "kernelArguments.shouldExist[]": str,
    "kernelArguments.shouldNotExist": list,
    "kernelArguments.shouldNotExist[]": str,
}

# Spec fields Keel does not apply -> one sentence why, or what to use instead.
REFUSED: dict[str, str] = {
    "ignition.proxy": "first-boot fetches go direct, not through a proxy (not supported "
    "for now); for the host's own proxy write /etc/environment or a systemd drop-in "
    "with storage.files",
    "storage.raid": "software RAID arrays are not assembled at first boot (not supported "
    "for now); partition and format each disk with storage.disks and storage.filesystems",
    "storage.luks": "LUKS volumes are not set up at first boot (not supported for now); "
    "an unencrypted data disk is formatted with storage.filesystems",
    "networkd": "the networkd section was removed in Ignition spec 3; write "
    "systemd-networkd files in /etc/systemd/network with storage.files (static "
    "addresses too)",
}

# Under `ignition`, butane writes empty objects for sections nobody filled in (for
# example `"replace": {"verification": {}}`): those ask for nothing and are accepted.
EMPTY_ALLOWED_UNDER = "ignition."


def refusal(schema_path: str) -> str | None:
    """Why a field not in FIELDS is refused (None: it is not an Ignition field)."""
    leaf = schema_path.rsplit(".", 1)[-1]
    for prefix, reason in REFUSED.items():
        if schema_path == prefix or schema_path.startswith(prefix + ".") or leaf == prefix:
            return reason
    return None


def asks_for_nothing(value: Any) -> bool:
    """True for null and for objects or lists holding only such values."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            return False
    return True
