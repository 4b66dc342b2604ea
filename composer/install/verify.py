"""Reading back what `keel install` wrote: the partition table must list the image's
partitions where the manifest puts them, and every partition that got a filesystem
image must hash to the manifest's sha256, read from the target itself (the page
cache is dropped first, so the bytes come from the disk, not from memory)."""

from __future__ import annotations

import hashlib
import json
import os

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.progress import Progress
from composer.install.image import SourceImage, WrittenPartition
from composer.install.target import Target

CHUNK = 4 * 1024 * 1024


def verify_table(image: SourceImage, target: Target) -> None:
    text = commands.output(["sfdisk", "--json", target.path])
    table = json.loads(text)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    found = {int(p["node"][len(p["node"].rstrip("0123456789")) :]): p for p in table["partitions"]}
    for part in image.partitions:
        entry = found.get(part.number)
        if entry is None:
            raise KeelError(f"{target.path}: partition {part.number} ({part.label}) is missing")
        actual = (
            int(entry["start"]) * sector,
            int(entry["size"]) * sector,
            str(entry["type"]).upper(),
            str(entry.get("uuid", "")).upper(),
            entry.get("name", ""),
        )
        expected = (part.start, part.size, part.type, part.uuid, part.label)
        if actual != expected:
            raise KeelError(
                f"{target.path}: partition {part.number} is {actual}, the manifest says {expected}"
            )


def partition_sha256(target: Target, part: WrittenPartition, progress: Progress) -> str:
    assert part.image_size is not None
    fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    shown = progress.transfer(f"reading back {part.label}", part.image_size)
    try:
        os.posix_fadvise(fd, part.start, part.image_size, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        done = 0
        while done < part.image_size:
            block = os.pread(fd, min(CHUNK, part.image_size - done), part.start + done)
            if not block:
                raise KeelError(f"{target.path} ended inside partition {part.label}")
            digest.update(block)
            done += len(block)
            shown.update(done)
    finally:
        os.close(fd)
    shown.finish(done)
    return digest.hexdigest()


def verify_partitions(image: SourceImage, target: Target, progress: Progress) -> list[str]:
    """The labels of the partitions checked; KeelError naming the first that differs."""
    verify_table(image, target)
    checked = []
    for part in image.partitions:
        if part.sha256 is None:
            continue  # an empty slot: nothing was written there
        actual = partition_sha256(target, part, progress)
        if actual != part.sha256:
            raise KeelError(
                f"{target.path}: partition {part.label} reads back with sha256 {actual}, "
                f"but the image's is {part.sha256}",
                hint="the target may be failing (or was written to meanwhile); "
                "try again, or try another disk",
            )
        checked.append(part.label)
    return checked
