"""Build step: unpack the cached root tarball into a fresh staging tree."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from composer.build.bootstrap import root_tarball
from composer.core import commands

if TYPE_CHECKING:
    from composer.build.context import BuildContext


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


def step(ctx: BuildContext) -> None:
    unpack(root_tarball(ctx.definition), ctx.tree)
