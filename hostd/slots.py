"""The two root slots: which one is booted, and writing a root image into the other.

The booted slot is never written. hostd knows which one it is from the block device
actually mounted on / (through dm-verity, the partition under it) and, when the loader
entry's options made the command line, from keel.slot= there too; it refuses to write
anything when the two disagree. Under Secure Boot the command line is the unified
kernel image's own, signed and the same for both slots, so it names no slot and the
device alone tells (the initrd found it by the version's verity superblock).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hostd import sysblock
from hostd.files import write_all
from hostd.formats import bootentry
from hostd.formats.bundle import CHUNK, Part, check_digest

PARTLABELS = Path("/dev/disk/by-partlabel")
RELEASE = Path("/usr/lib/keel/release")
# After a failed slot write: how long the thread feeding zstd may take to end.
FEEDER_GRACE = 10.0

log = logging.getLogger("keel.hostd")


class SlotError(Exception):
    pass


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    architecture: str


def read_release(path: Path = RELEASE) -> Release:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    return Release(
        values.get("KEEL_IMAGE_NAME", ""),
        values.get("KEEL_IMAGE_VERSION", ""),
        values.get("KEEL_ARCHITECTURE", ""),
    )


def other_slot(slot: str) -> str:
    return "b" if slot == "a" else "a"


def slot_device(slot: str, partlabels: Path = PARTLABELS) -> Path:
    return partlabels / bootentry.slot_label(slot)


def cmdline_slot(cmdline: str) -> str | None:
    for word in cmdline.split():
        if word.startswith("keel.slot="):
            return word.removeprefix("keel.slot=")
    return None


def root_device_number(mountinfo: str) -> int:
    """The dev_t of the filesystem mounted on / (field 3 of /proc/self/mountinfo)."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            major, minor = (int(n) for n in fields[2].split(":"))
            return os.makedev(major, minor)
    raise SlotError("/proc/self/mountinfo has no / mount")


def booted_slot(
    cmdline: str | None = None,
    mountinfo: str | None = None,
    partlabels: Path = PARTLABELS,
    sys_block: Path = sysblock.SYS_DEV_BLOCK,
) -> str:
    """The booted slot: the mounted device's (through dm-verity, the partition under
    it), confirmed by the kernel command line's keel.slot= when it has one."""
    cmdline = cmdline if cmdline is not None else Path("/proc/cmdline").read_text()
    mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    claimed = cmdline_slot(cmdline)
    if claimed is not None and claimed not in bootentry.SLOTS:
        raise SlotError(f"the kernel command line names no Keel slot (keel.slot={claimed})")
    root = root_device_number(mountinfo)
    mounted = os.makedev(*sysblock.underlying(os.major(root), os.minor(root), sys_block))
    for slot in bootentry.SLOTS:
        try:
            device = os.stat(slot_device(slot, partlabels)).st_rdev
        except OSError:
            continue
        if device == mounted:
            if claimed is not None and slot != claimed:
                raise SlotError(
                    f"the command line says slot {claimed} but / is {bootentry.slot_label(slot)}"
                )
            return slot
    expected = bootentry.slot_label(claimed) if claimed else "a Keel root slot"
    raise SlotError(f"/ is not mounted from {expected} (nor any slot)")


def device_size(device: Path) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _feed(source: Iterable[bytes], sink: IO[bytes], errors: list[BaseException]) -> None:
    try:
        for block in source:
            sink.write(block)
    except BaseException as error:  # reported by the reader thread
        errors.append(error)
    finally:
        try:
            sink.close()
        except OSError as error:
            errors.append(error)


def write_compressed(
    device: Path,
    compressed: Iterable[bytes],
    part: Part,
    progress: Callable[[int], None] = lambda _: None,
) -> None:
    """Stream zstd-compressed data through `zstd -dc` into device, checking as it goes.

    The sha256 is computed over what is written, and more bytes than the manifest
    announces are never written (a bundle that lies about its size cannot overrun
    the slot into the next partition)."""
    zstd = subprocess.Popen(
        ["zstd", "-dc", "--no-progress"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert zstd.stdin is not None and zstd.stdout is not None and zstd.stderr is not None
    errors: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(compressed, zstd.stdin, errors), daemon=True)
    feeder.start()
    try:
        written, sha256 = _write_decompressed(zstd.stdout, device, part, progress)
    except BaseException:
        # The disk failed (EIO, ENOSPC), progress raised, or zstd gave too much: stop
        # zstd before waiting for anything. Left running, it blocks on its full output
        # pipe, the feeder on zstd's full input pipe, and the join on the feeder, for
        # ever, with the update lock held.
        _stop(zstd, feeder)
        raise
    # zstd has closed its output, so it is ending: the feeder ends too (broken pipe).
    feeder.join()
    stderr = zstd.stderr.read().decode(errors="replace")
    code = zstd.wait()
    zstd.stdout.close()
    zstd.stderr.close()
    if errors:
        raise SlotError(f"reading {part.member} from the bundle failed: {errors[0]}")
    if code != 0:
        raise SlotError(f"zstd failed on {part.member}: {stderr.strip() or f'exit {code}'}")
    check_digest(part, written, sha256)


def _write_decompressed(
    stream: IO[bytes], device: Path, part: Part, progress: Callable[[int], None]
) -> tuple[int, str]:
    """Copy zstd's output to device; the length and sha256 of what was written."""
    digest = hashlib.sha256()
    written = 0
    fd = os.open(device, os.O_WRONLY)
    try:
        while block := stream.read(CHUNK):
            if written + len(block) > part.size:
                raise SlotError(f"{part.member} decompresses to more than {part.size} bytes")
            write_all(fd, block)
            digest.update(block)
            written += len(block)
            progress(written)
        os.fsync(fd)
    finally:
        os.close(fd)
    return written, digest.hexdigest()


def _stop(zstd: subprocess.Popen[bytes], feeder: threading.Thread) -> None:
    """End zstd and the feeder after a failure; never waits without a bound."""
    zstd.kill()
    zstd.wait()
    # With zstd gone the feeder's write fails at once (broken pipe); only a read from
    # the bundle that is under way can keep it a moment longer.
    feeder.join(FEEDER_GRACE)
    if feeder.is_alive():
        log.warning("the thread feeding zstd did not end; left behind")
    for stream in (zstd.stdout, zstd.stderr):
        if stream is not None:
            stream.close()


def read_back_sha256(device: Path, size: int, also: Callable[[bytes], None] | None = None) -> str:
    """The sha256 of the first size bytes as the disk has them, not the page cache;
    also: called with every chunk read, in order (a second check in the same pass)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        # Written pages are clean after fsync; dropping them makes this a real read.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            block = os.read(fd, min(CHUNK, remaining))
            if not block:
                raise SlotError(f"{device} ended {remaining} bytes early")
            digest.update(block)
            if also is not None:
                also(block)
            remaining -= len(block)
        return digest.hexdigest()
    finally:
        os.close(fd)
