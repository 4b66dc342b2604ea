"""`keelctl install TARGET`, top to bottom.

1. What is booted (source.py) and whether TARGET may be written (target.py): nothing
   is written before every check has passed and, without --yes, the user said yes.
2. A new GPT with the booted disk's layout under temporary names (layout.py).
3. The booted slot's filesystem into root-a, read back and compared.
4. A fresh var from the image's factory copy: the new disk gets its own machine-id,
   SSH host keys and provisioning on its first boot, never this host's.
5. A new ESP: systemd-boot, the booted unified kernel image as slot a's, a loader entry
   with a fresh tries counter, and the config; read back.
6. The real partition names, last; the running host's partition links are then
   given back to the disk booted from (writer.final_names).

The disk booted from is only read. A failure leaves TARGET with temporary names, so
it cannot be taken for a Keel disk; running the install again starts over."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hostd.ignition.blockdev import Machine, ToolError
from hostd.install import layout, writer
from hostd.install.errors import InstallError
from hostd.install.source import Source, booted
from hostd.install.target import Disk, check_disk, gib


@dataclass(frozen=True)
class Installed:
    source: Source
    disk: Disk
    root_sha256: str
    var_size: int
    seconds: float


def describe(machine: Machine, disk: Disk) -> str:
    found = machine.probe(disk.node)
    if found.table:
        return f"a {found.table} partition table"
    return f"a {found.type} signature" if found.type else "nothing Keel recognises"


def install(
    target: str,
    config: bytes | None,
    confirm: Callable[[str], bool],
    say: writer.Say,
    machine: Machine | None = None,
) -> Installed:
    machine = machine or Machine()
    started = time.monotonic()
    try:
        source = booted(machine)
        disk = check_disk(machine, target, layout.needed_size(source.table))
        planned = layout.plan(source.table, disk.size)
        question = (
            f"This erases everything on {disk.node} ({gib(disk.size)}; it holds "
            f"{describe(machine, disk)}) and installs {source.name} {source.version} on it."
        )
        if not confirm(question):
            raise InstallError("nothing was written")
        say(f"writing the partition table of {disk.node}")
        nodes = writer.write_table(machine, disk, planned)
        say(f"copying slot {source.slot} ({source.root}) into root-a, {nodes[2]}")
        root_sha256 = writer.copy_root(source, nodes[2], say)
        say(f"making a fresh var on {nodes[4]}")
        writer.make_var(machine, nodes[4])
        say(f"making the ESP on {nodes[1]}")
        writer.make_esp(machine, nodes[1], writer.esp_files(source, config))
        say("naming the partitions for the next boot")
        writer.final_names(machine, disk, planned, source, say)
    except ToolError as error:
        raise InstallError(str(error)) from None
    except OSError as error:
        raise InstallError(f"{error.filename or target}: {error.strerror}") from None
    return Installed(source, disk, root_sha256, planned[-1].size, time.monotonic() - started)
