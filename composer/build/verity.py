"""The root image's dm-verity hash tree, appended to the image file by `veritysetup
format` (cryptsetup-bin; it works on a plain file: no loop device, no kernel).

Reproducible: veritysetup draws a random salt and UUID unless given them, so both are
derived from the image's identity (name, version), as the partition UUIDs are. The
tree goes in the same file right after the erofs data, so a slot holds one file's
bytes and an update writes it in one pass; hostd/formats/verity.py reads it back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from composer.build.partitions import stable_uuid
from composer.core import commands
from composer.core.errors import KeelError
from hostd.formats import verity


def salt_for(*identity: str) -> str:
    """A 32-byte salt (hex) that only the identity decides."""
    return hashlib.sha256("/".join(("keel-verity-salt", *identity)).encode()).hexdigest()


def append_hash_tree(image: Path, *identity: str) -> verity.Verity:
    """Append superblock and hash tree to image (grown in place) and return its root
    hash; the data must be whole 4 KiB blocks, or its tail would go unverified."""
    size = image.stat().st_size
    if size == 0 or size % verity.BLOCK:
        raise KeelError(
            f"{image} is {size} bytes, not whole {verity.BLOCK}-byte blocks: "
            "dm-verity would leave its tail unchecked"
        )
    root_hash_file = image.with_name(image.name + ".roothash")
    salt = salt_for(*identity)
    commands.run(
        ["veritysetup", "format", "--hash=sha256",
         f"--data-block-size={verity.BLOCK}", f"--hash-block-size={verity.BLOCK}",
         f"--salt={salt}", f"--uuid={stable_uuid(*identity, 'verity')}",
         f"--hash-offset={size}", f"--root-hash-file={root_hash_file}",
         image, image],
        capture=True,
        hint="veritysetup comes with the Debian package `cryptsetup-bin`",
    )  # fmt: skip
    root_hash = root_hash_file.read_text().strip()
    root_hash_file.unlink()
    return verity.Verity(root_hash=root_hash, salt=salt, data_blocks=size // verity.BLOCK)
