"""Build step 2: unpack the cached root tarball into a fresh staging tree."""

from __future__ import annotations

import shutil
from pathlib import Path

from composer.core import commands


def unpack(tarball: Path, tree: Path) -> Path:
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    # --numeric-owner: ids as the image has them, not mapped through the build host's
    # user names; xattrs keep file capabilities.
    commands.run(
        [
            "tar", "--extract", "--file", tarball, "--directory", tree,
            "--numeric-owner", "--same-permissions", "--xattrs", "--xattrs-include=*",
        ]
    )  # fmt: skip
    return tree
