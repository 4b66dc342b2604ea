"""Build step: compile the image's Python bytecode once, at build time.

The root filesystem is read-only and every file in it carries the build's timestamp,
so the .pyc files Debian's packages made at install time (which record the source's
mtime) no longer match, and Python would compile every module it imports anew, in
memory, at every start: seconds of each boot under emulation for hostd's units.
Hash-based .pyc files that are never checked against their source
(--invalidation-mode unchecked-hash) are right for a tree nobody can change; they
hold no timestamp, so the build stays reproducible.

The image's own python3 compiles (through chroot, as the kernel-module hook does),
since the bytecode format belongs to its version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from composer.build.agent import AGENT_DIR
from composer.core import commands

if TYPE_CHECKING:
    from composer.build.context import BuildContext

# The standard library and Debian's packages, and hostd with its dependencies.
PYTHON_TREES = ("usr/lib/python3", "usr/lib/python3.*", AGENT_DIR)


def step(ctx: BuildContext) -> None:
    folders = sorted(
        "/" + str(path.relative_to(ctx.tree))
        for pattern in PYTHON_TREES
        for path in ctx.tree.glob(pattern)
        if path.is_dir()
    )
    if not folders:
        return
    commands.run(
        [
            "chroot", ctx.tree, "/usr/bin/python3", "-m", "compileall",
            "-q", "-f", "-j0", "--invalidation-mode", "unchecked-hash", *folders,
        ]
    )  # fmt: skip
