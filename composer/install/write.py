"""Writing disk.raw to the target, and growing an image file to the size asked for.

A file target is made anew and sparse: blocks of zeros in the image are skipped, so
an 8 GiB file of a 2.5 GiB image takes the image's real data on the build disk. A
block device gets every byte, since what it held before is still there where the
image has zeros. Either way the data is synced before anything reads it back."""

from __future__ import annotations

import os
from dataclasses import dataclass

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.progress import Progress
from composer.install.image import SourceImage
from composer.install.target import Target

CHUNK = 4 * 1024 * 1024
_ZEROS = bytes(CHUNK)


@dataclass(frozen=True)
class Written:
    size: int  # of the image, holes included
    data: int  # what was actually written (a file skips the image's zeros)
    seconds: float  # writing and syncing


def write_image(image: SourceImage, target: Target, progress: Progress) -> Written:
    """Copy disk.raw to the start of the target and sync it."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    if target.is_device:
        # An exclusive open of a block device fails while anything has it mounted: a
        # last guard between the checks and the write.
        flags |= os.O_EXCL
    else:
        # The path was resolved when it was checked: a link that appeared since is
        # not followed.
        flags |= os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    try:
        fd = os.open(target.path, flags, 0o644)
    except OSError as error:
        raise KeelError(f"cannot open {target.path} for writing: {error.strerror}") from None
    shown = progress.transfer(f"writing {target.path}", image.size)
    done = data = 0
    try:
        if not target.is_device:
            os.ftruncate(fd, image.size)
        with image.raw.open("rb") as source:
            while chunk := source.read(CHUNK):
                if target.is_device or chunk != _ZEROS[: len(chunk)]:
                    _write_at(fd, chunk, done)
                    data += len(chunk)
                done += len(chunk)
                shown.update(done)
        os.fsync(fd)
    except OSError as error:
        raise KeelError(f"writing {target.path} failed: {error.strerror}") from None
    finally:
        os.close(fd)
    if done != image.size:
        raise KeelError(f"{image.raw} changed while it was written ({done} of {image.size} bytes)")
    return Written(done, data, shown.finish(done))


def _write_at(fd: int, chunk: bytes, offset: int) -> None:
    view = memoryview(chunk)
    while view:
        offset += (written := os.pwrite(fd, view, offset))
        view = view[written:]


def grow_to_size(image: SourceImage, target: Target) -> None:
    """Extend a file target to its size (sparse), and move the GPT's backup header to
    the end of the target: the table then covers all of it, and the host's first boot
    only has to grow var (keel-grow-var.service)."""
    if not target.is_device and target.size > image.size:
        with target.path.open("r+b") as handle:
            handle.truncate(target.size)
            os.fsync(handle.fileno())
    if target.size > image.size:
        # sfdisk works on a plain file as on a disk; no loop device.
        commands.run(["sfdisk", "--quiet", "--relocate", "gpt-bak-std", target.path])
        sync(target)


def sync(target: Target) -> None:
    fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
