"""Safe writes into a staging tree: a path in the image must never resolve through a
symlink to somewhere on the build machine (for example /etc/resolv.conf)."""

from __future__ import annotations

import os
from pathlib import Path

from composer.core.errors import KeelError


def image_path(tree: Path, target: str) -> Path:
    """The staging path for an absolute path in the image, refusing escapes."""
    if not target.startswith("/"):
        raise KeelError(f"path in the image must be absolute: {target!r}")
    path = tree / target.lstrip("/")
    parent = path.parent.resolve()
    root = tree.resolve()
    # The parent may be a symlink inside the image (merged /usr: /lib -> usr/lib); it
    # just must not lead outside the tree.
    if parent != root and root not in parent.parents:
        raise KeelError(f"path {target!r} leads outside the image (through a symlink)")
    return parent / path.name


def read_ids(tree: Path, database: str) -> dict[str, int]:
    """Name -> numeric id from the image's /etc/passwd or /etc/group."""
    ids: dict[str, int] = {}
    for line in (tree / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            ids[fields[0]] = int(fields[2])
    return ids


def resolve_owner(tree: Path, owner: str, where: str) -> tuple[int, int]:
    """'user:group' (names or numbers) -> (uid, gid), looked up in the image, not the host."""
    user, _, group = owner.partition(":")
    group = group or user
    users, groups = read_ids(tree, "passwd"), read_ids(tree, "group")

    def lookup(name: str, table: dict[str, int], kind: str) -> int:
        if name.isdigit():
            return int(name)
        if name not in table:
            raise KeelError(
                f"{where}: {kind} '{name}' does not exist in the image",
                hint=f"use a {kind} the image's packages create, or a numeric id",
            )
        return table[name]

    return lookup(user, users, "user"), lookup(group, groups, "group")


def write_file(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Replace path with data; unlinking first so an existing symlink is not followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_bytes(data)
    os.chown(path, uid, gid)
    path.chmod(mode)
