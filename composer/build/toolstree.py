"""Tools trees: tools newer than the build machine's, taken from a current Debian
suite and cached, as mkosi does with its tools tree. There are two, so a build never
waits for what only `keel run` needs:

- the build's (BUILD_PACKAGES): Debian 12's erofs-utils (1.5) compresses on one
  thread, and mkfs.erofs was most of a warm rebuild (issue 18). Trixie's (1.8)
  compresses on every CPU and gives the same bytes for any number of them.
- the VMs' (VM_PACKAGES), which `keel run` boots with (composer/vm/runner.py):
  trixie's QEMU (10.0) booted docker-host to SSH under TCG in 16.8 s where Debian
  12's QEMU 7.2 took 23.1 s (alternating boots, docs/benchmarks.md), and trixie's
  OVMF (edk2 2025.02) reaches the boot loader in 1.4 s where Debian 12's takes 3.5 s.

Each tree is extracted once with mmdebstrap's "extract" variant (the packages and
their dependencies unpacked, no maintainer script run, no root needed to use it; the
build's 4 MB, the VMs' 184 MB, about 5 s each) and cached by a key of what decides its
content. mmdebstrap runs no customize hook in that variant, so the download cache
(composer/build/debcache.py) does not apply to it.

Its programs run through the tree's own dynamic loader with the tree's libraries
only (--inhibit-cache: the build machine's ld.so.cache is never read), so they see
the build machine's files but none of its libraries; no chroot or mount is needed.
Every build, whatever the machine has installed, makes its erofs image with the same
erofs-utils."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import cache_root
from composer.core.progress import Progress

if TYPE_CHECKING:
    from composer.build.context import BuildContext

# Bump when the recipe below changes in a way the key would not otherwise see.
RECIPE_VERSION = 2
SUITE = "trixie"
BUILD_PACKAGES = ("erofs-utils",)
VM_PACKAGES = ("qemu-system-x86", "ovmf")
# Where the tree's loader and libraries are (amd64, the only architecture built).
LOADER = "usr/lib64/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu",)


@dataclass(frozen=True)
class ToolsTree:
    root: Path

    def command(self, program: str) -> list[str]:
        """argv that runs program (from the tree's /usr/bin) with the tree's libraries."""
        libraries = ":".join(str(self.root / d) for d in LIBRARY_DIRS)
        return [
            str(self.root / LOADER), "--inhibit-cache", "--library-path", libraries,
            "--argv0", program, str(self.root / "usr/bin" / program),
        ]  # fmt: skip

    @property
    def firmware_descriptors(self) -> Path:
        """QEMU's firmware descriptors of the tree's OVMF (VM_PACKAGES); the file
        names they give are inside the tree."""
        return self.qemu_data / "firmware"

    @property
    def qemu_data(self) -> Path:
        """The data folder of the tree's QEMU (option ROMs and the like): run through
        the loader, QEMU would look in the build machine's /usr/share/qemu instead."""
        return self.root / "usr/share/qemu"


def cache_key(mirror: str, packages: tuple[str, ...] = BUILD_PACKAGES) -> str:
    recipe = {"recipe": RECIPE_VERSION, "suite": SUITE, "packages": packages, "mirror": mirror}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def tools_tree(
    progress: Progress,
    scratch: Path,
    mirror: str = "",
    packages: tuple[str, ...] = BUILD_PACKAGES,
) -> ToolsTree:
    """The cached tools tree of these packages, extracted first if this recipe has none
    yet (mmdebstrap working in the scratch folder)."""
    root = cache_root() / "tools" / cache_key(mirror, packages)
    if (root / LOADER).exists():
        return ToolsTree(root)
    progress.say(f"    tools tree: extracting {', '.join(packages)} from Debian {SUITE}")
    root.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own, so two builds at once never write one folder.
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        "mmdebstrap", "--mode=root", "--variant=extract", "--quiet",
        f"--include={','.join(packages)}",
        SUITE, str(partial),
    ]  # fmt: skip
    if mirror:
        cmd.append(mirror)
    try:
        commands.run(
            cmd,
            env={"TMPDIR": str(scratch)},
            hint=f"the tools tree needs network access to Debian {SUITE}",
        )
        if not (partial / LOADER).exists():
            raise KeelError(
                f"the tools tree from Debian {SUITE} has no {LOADER}",
                hint=f"remove {root.parent} and build again",
            )
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ToolsTree(root)


def step(ctx: BuildContext) -> None:
    ctx.tools = tools_tree(ctx.progress, ctx.work, ctx.definition.debian.mirror)
