"""Where `keel install` may write, decided before a byte is written.

Refused always: a target that is mounted or otherwise in use (swap, device-mapper,
RAID, a loop device over a file), a disk that holds this machine's own filesystems, a
partition instead of a whole disk, a read-only device, a file of the build itself, and
anything smaller than the image. Refused unless --force: a target that already holds
a partition table or a filesystem. A block device is checked as `keelctl install`
checks its target on a host (hostd/install/target.py), from sysfs and /proc."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError
from composer.install.image import SourceImage
from hostd.ignition.blockdev import Machine, ToolError
from hostd.install.errors import InstallError
from hostd.install.target import check_disk, gib, partition_nodes


@dataclass(frozen=True)
class Target:
    path: Path  # symlinks resolved: /dev/disk/by-id/... becomes /dev/sdX
    is_device: bool
    size: int  # what the target holds once written: the device's size, or the file's


def check_target(
    path: Path,
    image: SourceImage,
    *,
    size: int | None = None,
    force: bool = False,
    machine: Machine | None = None,
) -> Target:
    """The target, or KeelError saying why it is refused."""
    machine = machine or Machine()
    resolved = Path(os.path.realpath(path))
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISBLK(mode):
        return _check_device(path, resolved, image, size, force, machine)
    if mode is not None and not stat.S_ISREG(mode):
        raise KeelError(f"{path} is neither a block device nor a regular file")
    return _check_file(path, resolved, image, size, force, machine)


def _check_file(
    given: Path, path: Path, image: SourceImage, size: int | None, force: bool, machine: Machine
) -> Target:
    if not path.parent.is_dir():
        raise KeelError(f"{given}: the folder {path.parent} does not exist")
    wanted = image.size if size is None else size
    if wanted < image.size:
        raise KeelError(
            f"--size {gib(wanted)} is smaller than the image ({gib(image.size)}, "
            f"{image.size} bytes)",
            hint=f"give --size of at least {-(-image.size // 1024**3)}G, or leave it out",
        )
    if path.exists():
        if any(path.samefile(own) for own in image.folder.rglob("*") if own.is_file()):
            raise KeelError(f"{given} is a file of the build {image.folder} itself")
        loops = _loop_devices_over(path, machine.sys)
        if loops:
            raise KeelError(
                f"{given} is in use as the backing file of {', '.join(loops)}",
                hint=f"detach it first (`losetup -d {loops[0]}`)",
            )
        _refuse_existing_content(given, str(path), force, machine)
    return Target(path, is_device=False, size=wanted)


def _check_device(
    given: Path, path: Path, image: SourceImage, size: int | None, force: bool, machine: Machine
) -> Target:
    if size is not None:
        raise KeelError(
            f"--size is for image files; {given} is a block device and keeps its own size"
        )
    try:
        disk = check_disk(machine, str(path), image.size, what="the image")
    except InstallError as error:
        raise KeelError(str(error)) from None
    if partition_nodes(machine, disk) and not force:
        raise KeelError(
            f"{given} already has partitions; refusing to overwrite them",
            hint="check it is the disk you mean, then add --force",
        )
    _refuse_existing_content(given, str(path), force, machine)
    return Target(path, is_device=True, size=disk.size)


def _refuse_existing_content(given: Path, node: str, force: bool, machine: Machine) -> None:
    """A partition table or a filesystem on the target, unless --force."""
    if force:
        return
    try:
        found = machine.probe(node)
    except ToolError as error:
        raise KeelError(f"cannot tell what {given} holds: {error}") from None
    what = (
        f"a partition table ({found.table})"
        if found.table
        else f"a filesystem or other signature ({found.type})"
        if found.type
        else ""
    )
    if what:
        raise KeelError(
            f"{given} already holds {what}; refusing to overwrite it",
            hint="check it is the target you mean, then add --force",
        )


def _loop_devices_over(path: Path, sys: Path) -> list[str]:
    """The loop devices whose backing file is path."""
    found = []
    for backing in sorted(sys.glob("block/loop*/loop/backing_file")):
        try:
            name = backing.read_text().strip().removesuffix(" (deleted)")
            if name and Path(name).exists() and Path(name).samefile(path):
                found.append(f"/dev/{backing.parent.parent.name}")
        except OSError:
            continue
    return found
