"""Butane's fields, the Ignition field each becomes, and from which schema on.

Each struct lists its fields in the order butane's Go types marshal them (struct
order: alphabetical by Go name, a node's path/user/group first), so the JSON Keel
writes is byte-for-byte butane's. A field is (yaml name, json name or None when
translated specially, type, first base schema that has it). Types: "str", "int",
"bool", a struct name, or [type] for a list."""

from __future__ import annotations

from typing import Any

Field = tuple[str, str | None, Any, int]

_NODE: list[Field] = [
    ("group", "group", "Owner", 1),
    ("overwrite", "overwrite", "bool", 1),
    ("path", "path", "str", 1),
    ("user", "user", "Owner", 1),
]

STRUCTS: dict[str, list[Field]] = {
    "Config": [
        ("ignition", "ignition", "Ignition", 1),
        ("kernel_arguments", "kernelArguments", "KernelArguments", 4),
        ("passwd", "passwd", "Passwd", 1),
        ("storage", "storage", "Storage", 1),
        ("systemd", "systemd", "Systemd", 1),
    ],
    "Ignition": [
        ("config", "config", "IgnitionConfig", 1),
        ("proxy", "proxy", "Proxy", 2),
        ("security", "security", "Security", 1),
        ("timeouts", "timeouts", "Timeouts", 1),
    ],
    "IgnitionConfig": [("merge", "merge", ["Resource"], 1), ("replace", "replace", "Resource", 1)],
    "Proxy": [
        ("http_proxy", "httpProxy", "str", 2),
        ("https_proxy", "httpsProxy", "str", 2),
        ("no_proxy", "noProxy", ["str"], 2),
    ],
    "Security": [("tls", "tls", "TLS", 1)],
    "TLS": [("certificate_authorities", "certificateAuthorities", ["Resource"], 1)],
    "Timeouts": [
        ("http_response_headers", "httpResponseHeaders", "int", 1),
        ("http_total", "httpTotal", "int", 1),
    ],
    "Resource": [
        ("compression", "compression", "str", 1),
        ("http_headers", "httpHeaders", ["HTTPHeader"], 2),
        ("source", "source", "str", 1),
        ("verification", "verification", "Verification", 1),
        ("inline", None, "str", 1),
        ("local", None, "str", 2),
    ],
    "HTTPHeader": [("name", "name", "str", 2), ("value", "value", "str", 2)],
    "Verification": [("hash", "hash", "str", 1)],
    "KernelArguments": [
        ("should_exist", "shouldExist", ["str"], 4),
        ("should_not_exist", "shouldNotExist", ["str"], 4),
    ],
    "Passwd": [("groups", "groups", ["PasswdGroup"], 1), ("users", "users", ["PasswdUser"], 1)],
    "PasswdGroup": [
        ("gid", "gid", "int", 1),
        ("name", "name", "str", 1),
        ("password_hash", "passwordHash", "str", 1),
        ("should_exist", "shouldExist", "bool", 3),
        ("system", "system", "bool", 1),
    ],
    "PasswdUser": [
        ("gecos", "gecos", "str", 1),
        ("groups", "groups", ["str"], 1),
        ("home_dir", "homeDir", "str", 1),
        ("name", "name", "str", 1),
        ("no_create_home", "noCreateHome", "bool", 1),
        ("no_log_init", "noLogInit", "bool", 1),
        ("no_user_group", "noUserGroup", "bool", 1),
        ("password_hash", "passwordHash", "str", 1),
        ("primary_group", "primaryGroup", "str", 1),
        ("ssh_authorized_keys", "sshAuthorizedKeys", ["str"], 1),
        ("shell", "shell", "str", 1),
        ("should_exist", "shouldExist", "bool", 3),
        ("system", "system", "bool", 1),
        ("uid", "uid", "int", 1),
        ("ssh_authorized_keys_local", None, ["str"], 5),
    ],
    "Storage": [
        ("directories", "directories", ["Directory"], 1),
        ("disks", "disks", ["Disk"], 1),
        ("files", "files", ["File"], 1),
        ("filesystems", "filesystems", ["Filesystem"], 1),
        ("links", "links", ["Link"], 1),
        ("trees", None, ["Tree"], 2),
    ],
    "Disk": [
        ("device", "device", "str", 1),
        ("partitions", "partitions", ["Partition"], 1),
        ("wipe_table", "wipeTable", "bool", 1),
    ],
    "Partition": [
        ("guid", "guid", "str", 1),
        ("label", "label", "str", 1),
        ("number", "number", "int", 1),  # omitted when 0, as Go's omitempty does
        ("resize", "resize", "bool", 3),
        ("should_exist", "shouldExist", "bool", 1),
        ("size_mib", "sizeMiB", "int", 1),
        ("start_mib", "startMiB", "int", 1),
        ("type_guid", "typeGuid", "str", 1),
        ("wipe_partition_entry", "wipePartitionEntry", "bool", 1),
    ],
    "Filesystem": [
        ("device", "device", "str", 1),
        ("format", "format", "str", 1),
        ("label", "label", "str", 1),
        ("mount_options", "mountOptions", ["str"], 2),
        ("options", "options", ["str"], 1),
        ("path", "path", "str", 1),
        ("uuid", "uuid", "str", 1),
        ("wipe_filesystem", "wipeFilesystem", "bool", 1),
        ("with_mount_unit", None, "bool", 2),  # a systemd unit, see translate.py
    ],
    "Owner": [("id", "id", "int", 1), ("name", "name", "str", 1)],
    "File": [
        *_NODE,
        ("append", "append", ["Resource"], 1),
        ("contents", "contents", "Resource", 1),
        ("mode", "mode", "int", 1),
    ],
    "Directory": [*_NODE, ("mode", "mode", "int", 1)],
    "Link": [*_NODE, ("hard", "hard", "bool", 1), ("target", "target", "str", 1)],
    "Tree": [("local", None, "str", 2), ("path", None, "str", 2)],
    "Systemd": [("units", "units", ["Unit"], 1)],
    "Unit": [
        ("contents", "contents", "str", 1),
        ("dropins", "dropins", ["Dropin"], 1),
        ("enabled", "enabled", "bool", 1),
        ("mask", "mask", "bool", 1),
        ("name", "name", "str", 1),
        ("contents_local", None, "str", 5),
    ],
    "Dropin": [
        ("contents", "contents", "str", 1),
        ("name", "name", "str", 1),
        ("contents_local", None, "str", 5),
    ],
}

# Butane fields Keel does not translate, each with why: refused by name rather than as
# a typo.
NOT_TRANSLATED = {
    "Storage": {
        "raid": "software RAID is not assembled at first boot (not supported for now)",
        "luks": "LUKS volumes are not set up at first boot (not supported for now)",
    },
    "Config": {
        "boot_device": "it lays out the OS disk, which Keel's image fixes (A/B slots and "
        "var); extra disks go in storage.disks",
        "grub": "Keel boots with systemd-boot, not GRUB",
    },
}

# Ignition requires these; without them butane's output fails Ignition's validation.
REQUIRED = {
    **{kind: {"path"} for kind in ("File", "Directory", "Link")},
    **{kind: {"name"} for kind in ("PasswdGroup", "PasswdUser", "Unit", "Dropin", "HTTPHeader")},
    **{kind: {"device"} for kind in ("Disk", "Filesystem")},
}
