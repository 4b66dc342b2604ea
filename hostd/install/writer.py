"""Writing the new disk, a step at a time; every step reads back what it wrote.

Tools run through hostd.ignition.blockdev.Machine (the one place hostd runs storage
tools), so a failure names the command and what it printed."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hostd.files import write_all
from hostd.formats import bootentry
from hostd.ignition.blockdev import Machine
from hostd.install.errors import InstallError
from hostd.install.layout import Planned, sfdisk_script
from hostd.install.source import FACTORY_VAR, Source
from hostd.install.target import Disk, partition_nodes
from hostd.slots import PARTLABELS, read_back_sha256

CHUNK = 4 * 1024 * 1024
Say = Callable[[str], None]


def write_table(machine: Machine, disk: Disk, planned: tuple[Planned, ...]) -> dict[int, str]:
    """Wipe the disk's old signatures, write the table (temporary names), and return
    the partitions' device nodes once udev has made them."""
    machine.run(["wipefs", "--all", "--quiet", disk.node])
    machine.run(
        ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", disk.node],
        stdin=sfdisk_script(planned, disk.sector),
    )
    machine.settle()
    nodes = partition_nodes(machine, disk)
    if sorted(nodes) != [p.number for p in planned]:
        raise InstallError(f"{disk.node}: the kernel shows partitions {sorted(nodes)}")
    missing = machine.wait_for(list(nodes.values()))
    if missing:
        raise InstallError(f"{', '.join(missing)} did not appear after the table was written")
    return nodes


def copy_root(source: Source, node: str, say: Say) -> str:
    """The booted slot's filesystem into node; its sha256, read back from the new disk."""
    digest = hashlib.sha256()
    done, shown = 0, -1
    reader = os.open(source.root, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Exclusive: fails if anything has the partition open or mounted.
        writer = os.open(node, os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
        try:
            while done < source.root_size:
                block = os.read(reader, min(CHUNK, source.root_size - done))
                if not block:
                    raise InstallError(f"{source.root} ended {source.root_size - done} bytes early")
                write_all(writer, block)
                digest.update(block)
                done += len(block)
                if (percent := done * 100 // source.root_size) // 10 != shown:
                    shown = percent // 10
                    say(f"  root-a: {done / 1024**2:.0f} of {source.root_size / 1024**2:.0f} MiB")
            os.fsync(writer)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
    written = digest.hexdigest()
    back = read_back_sha256(Path(node), source.root_size)
    if back != written:
        raise InstallError(f"{node} reads back with sha256 {back}, but {written} was written")
    return written


def make_var(machine: Machine, node: str) -> None:
    """A fresh var from the image's factory copy: no identity, no state, no containers
    of this host; first boot makes the new host's own."""
    machine.run(["mkfs.ext4", "-q", "-F", "-L", "var", "-d", str(FACTORY_VAR), node])
    machine.run(["e2fsck", "-f", "-n", node])


@contextmanager
def mounted(machine: Machine, node: str, *options: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="keel-install-") as where:
        machine.run(["mount", "-t", "vfat", *options, node, where])
        try:
            yield Path(where)
        finally:
            machine.run(["umount", where])


def esp_files(source: Source, config: bytes | None) -> dict[str, bytes | Path]:
    """Path on the new ESP -> its content (bytes, or a file to copy): systemd-boot as
    the booted disk has it, the booted slot's unified kernel image as slot a's, an entry
    with a fresh tries counter (the health gate blesses it on the first boot), and the
    config first boot reads."""
    files: dict[str, bytes | Path] = {}
    for path in sorted((source.esp / "EFI").rglob("*")):
        if path.is_file():
            files[str(path.relative_to(source.esp))] = path
    files["loader/loader.conf"] = bootentry.loader_conf().encode()
    files[bootentry.uki_path("a").lstrip("/")] = source.uki
    entry = bootentry.BootEntry(source.name, source.version, "a", source.cmdline)
    files[f"loader/entries/{bootentry.entry_filename(source.version, 'a')}"] = (
        entry.render().encode()
    )
    if config is not None:
        files[bootentry.ESP_CONFIG] = config
    return files


def _content(value: bytes | Path) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


def make_esp(machine: Machine, node: str, files: dict[str, bytes | Path]) -> None:
    machine.run(["mkfs.vfat", "-F", "32", "-n", "ESP", node])
    with mounted(machine, node) as esp:
        for rel, value in files.items():
            target = esp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, Path):
                shutil.copyfile(value, target)
            else:
                target.write_bytes(value)
        os.sync()
    # Mounted again, read-only: the files come from the disk, not the page cache.
    with mounted(machine, node, "-o", "ro") as esp:
        for rel, value in files.items():
            wanted = hashlib.sha256(_content(value)).hexdigest()
            found = hashlib.sha256((esp / rel).read_bytes()).hexdigest()
            if found != wanted:
                raise InstallError(f"{rel} on the new ESP reads back differently")
    machine.run(["fsck.vfat", "-n", node])


def final_names(
    machine: Machine, disk: Disk, planned: tuple[Planned, ...], source: Source, say: Say
) -> None:
    """Write the partitions' real names, then give the names back to the disk booted
    from.

    udev makes /dev/disk/by-partlabel/NAME from the name in the table on the disk, and
    when two partitions have one name the link goes to the one it saw last: the new
    disk's, as soon as its table changes. The initrd, /efi and hostd find the ESP, the
    slots and var by those links, so the booted disk's partitions are shown to udev
    again: on equal terms it keeps the link on the device it handles."""
    for part in planned:
        machine.run(["sfdisk", "--quiet", "--part-label", disk.node, str(part.number), part.name])
    machine.settle()
    table = machine.table(disk.node)
    found = (
        [(s.number, s.name, s.start * table.sector, s.size * table.sector, s.type.upper())
         for s in table.slots]
        if table
        else []
    )  # fmt: skip
    wanted = [(p.number, p.name, p.start, p.size, p.type.upper()) for p in planned]
    if found != wanted:
        raise InstallError(f"{disk.node}: the table reads back as {found}, not {wanted}")
    booted_disk = machine.sys / "class/block" / source.disk
    own = [
        str(e) for e in sorted(booted_disk.glob(f"{source.disk}*")) if (e / "partition").is_file()
    ]
    machine.run(["udevadm", "trigger", "--settle", "--action=change", *own])
    astray = []
    for part in planned:
        device = machine.device(str(PARTLABELS / part.name))
        if device is not None and device.disk != source.disk:
            astray.append(f"{part.name} -> /dev/{device.name}")
    if astray:
        say(
            f"warning: /dev/disk/by-partlabel leads to {disk.node} ({', '.join(astray)}); "
            "power off before anything else uses them"
        )
