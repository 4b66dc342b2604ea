"""Build step: turn the staged tree into an immutable OS image.

- strip per-machine identity (machine-id, SSH host keys): created on first boot;
- stamp the image name and version into os-release, and its kernel command line
  into /usr/lib/keel/cmdline;
- take the kernel and initrd out of /boot (they go to the ESP and the slot payload);
- move /var out: it becomes the seed of the var partition (and a factory copy stays
  in the image), and point /root, /home, /usr/local and /opt at /var so they are
  writable (as on Fedora CoreOS: /usr/local -> ../var/usrlocal, /opt -> var/opt).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core import commands
from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition

if TYPE_CHECKING:
    from composer.build.context import BuildContext

FACTORY_VAR = "usr/share/factory/var"
KERNEL_CMDLINE = "usr/lib/keel/cmdline"
# Writable places of the image that live on /var: (path in the image, path in /var).
# Their image content moves to /var before the factory copy is taken, so both hold it.
# Link targets are relative, so the image resolves the same when mounted elsewhere.
VAR_PLACES = (("usr/local", "usrlocal"), ("opt", "opt"))

# Written at build time by package scripts; meaningless (or identity) on a host.
BUILD_LEFTOVERS = (
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/log/*.log",
    "var/log/apt/*",
    "var/cache/apt/*.bin",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists/*",
    "etc/initramfs-tools/modules.dpkg-*",
)


@dataclass(frozen=True)
class Finalized:
    kernel: Path
    initrd: Path
    kernel_version: str
    var_seed: Path
    packages: tuple[tuple[str, str, str], ...]  # (name, version, architecture)


def installed_packages(tree: Path) -> tuple[tuple[str, str, str], ...]:
    text = commands.output(
        [
            "dpkg-query", f"--admindir={tree / 'var/lib/dpkg'}", "--show",
            "--showformat=${Package}\\t${Version}\\t${Architecture}\\n",
        ]
    )  # fmt: skip
    rows = (tuple(line.split("\t")) for line in text.splitlines() if line)
    return tuple(sorted((r[0], r[1], r[2]) for r in rows if len(r) == 3))


def _remove_leftovers(tree: Path) -> None:
    for pattern in BUILD_LEFTOVERS:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    # "uninitialized": systemd treats the boot as the first one and writes a fresh
    # machine-id to /etc (writable through the overlay), so no two hosts share one.
    (tree / "etc/machine-id").write_text("uninitialized\n")


def _stamp_os_release(defn: ImageDefinition, tree: Path) -> None:
    release = tree / "usr/lib/os-release"
    lines = [
        line
        for line in release.read_text().splitlines()
        if not line.startswith(("IMAGE_ID=", "IMAGE_VERSION="))
    ]
    lines += [f"IMAGE_ID={defn.name}", f"IMAGE_VERSION={defn.version}"]
    release.write_text("\n".join(lines) + "\n")
    # The image's own kernel command line, for a boot entry written on the host
    # (`keelctl install`): the booted entry's also holds the host's own arguments.
    (tree / KERNEL_CMDLINE).parent.mkdir(parents=True, exist_ok=True)
    (tree / KERNEL_CMDLINE).write_text(" ".join(defn.kernel.cmdline) + "\n")


def _take_kernel(tree: Path, dest: Path) -> tuple[Path, Path, str]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        found = ", ".join(k.name for k in kernels) or "none"
        raise KeelError(
            f"expected exactly one kernel in /boot of the image, found: {found}",
            hint="list one kernel package in kernel.package and no other linux-image-*",
        )
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = tree / "boot" / f"initrd.img-{version}"
    if not initrd.exists():
        raise KeelError(f"the image has kernel {version} but no initrd for it")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.move(kernels[0], dest / "vmlinuz")
    shutil.move(initrd, dest / "initrd.img")
    for leftover in (tree / "boot").iterdir():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    return dest / "vmlinuz", dest / "initrd.img", version


def _relative_link(place: str, var_name: str) -> str:
    """The target of a link at place (in the image) to var/var_name: ../var/usrlocal
    for usr/local, var/opt for opt."""
    return "../" * place.count("/") + f"var/{var_name}"


def _move_to_var(tree: Path, place: str, var_name: str) -> None:
    """Move tree/place (made if the tree has none) into tree/var and link it there."""
    source = tree / place
    moved = tree / "var" / var_name
    if source.exists():
        shutil.move(source, moved)
    else:
        moved.mkdir(mode=0o755)
    source.symlink_to(_relative_link(place, var_name))


def _split_var(tree: Path, seed: Path) -> None:
    """Move /var (with /usr/local, /opt and /root's skeleton) to the var partition's
    seed tree."""
    if seed.exists():
        shutil.rmtree(seed)
    # /usr/local and /opt must be writable on a read-only root, and their files must
    # survive updates and rollbacks: they live on /var.
    for place, var_name in VAR_PLACES:
        _move_to_var(tree, place, var_name)
    # /root and /home must be writable on a read-only root: they live on /var.
    shutil.move(tree / "root", tree / "var/roothome")
    (tree / "root").symlink_to("var/roothome")
    home = tree / "home"
    shutil.move(home, tree / "var/home")
    home.symlink_to("var/home")
    (tree / "var/lib/keel").mkdir(parents=True, exist_ok=True)
    # The factory copy is the whole seed: `keelctl install` makes a fresh var from it.
    factory = tree / FACTORY_VAR
    factory.parent.mkdir(parents=True, exist_ok=True)
    commands.run(["cp", "-a", tree / "var", factory])
    shutil.move(tree / "var", seed)
    (tree / "var").mkdir(mode=0o755)
    # Mount points must exist in the image: nothing can create them on a read-only root.
    for mount_point in ("efi", "tmp"):
        (tree / mount_point).mkdir(exist_ok=True)


def _stamp_updated(tree: Path, epoch: int) -> None:
    """/etc and /var are as up to date as /usr: without the stamps systemd-update-done
    writes, the first boot runs ldconfig, the journal catalog update and sysusers
    (ConditionNeedsUpdate=), seconds under emulation, to redo what the packages'
    scripts did at build time. A later version's newer /usr still triggers them once."""
    text = (
        "# Keel: the image's /usr and this folder match (systemd-update-done(8)).\n"
        f"TIMESTAMP_NSEC={epoch * 1_000_000_000}\n"
    )
    for folder in ("etc", "var"):
        (tree / folder / ".updated").write_text(text)


def finalize(defn: ImageDefinition, tree: Path, work: Path, epoch: int) -> Finalized:
    packages = installed_packages(tree)
    _remove_leftovers(tree)
    _stamp_os_release(defn, tree)
    _stamp_updated(tree, epoch)
    kernel, initrd, kernel_version = _take_kernel(tree, work / "boot")
    seed = work / "var"
    _split_var(tree, seed)
    return Finalized(kernel, initrd, kernel_version, seed, packages)


def step(ctx: BuildContext) -> None:
    ctx.finalized = finalize(ctx.definition, ctx.tree, ctx.work, ctx.epoch)
