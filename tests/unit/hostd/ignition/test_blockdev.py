"""What hostd/ignition/blockdev.py reads of the machine, on a sysfs and procfs laid out
as the kernel does: the OS disk through partitions and device-mapper, what uses a disk,
its geometry, and what sfdisk and blkid print."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hostd.ignition.blockdev import Device, Found, Machine

MOUNTINFO = """\
22 1 0:21 / /proc rw,relatime - proc proc rw
27 1 254:2 / / ro,relatime - erofs /dev/vda2 ro
28 27 253:0 / /var rw,noatime - ext4 /dev/mapper/var rw
29 27 0:30 / /etc rw - overlay keel-etc rw
30 28 254:17 / /var/lib/docker rw - ext4 /dev/vdb1 rw
31 28 254:18 / /var/my\\040data rw - ext4 /dev/vdb2 rw
"""


def block(sys: Path, where: str, dev: str, partition: int | None = None) -> Path:
    """A block device's sysfs folder, with its /sys/dev/block and /sys/class/block links."""
    folder = sys / "devices" / where
    folder.mkdir(parents=True)
    (folder / "dev").write_text(dev + "\n")
    (folder / "holders").mkdir()
    if partition is not None:
        (folder / "partition").write_text(f"{partition}\n")
    for links in ("dev/block", "class/block"):
        (sys / links).mkdir(parents=True, exist_ok=True)
    (sys / "dev/block" / dev).symlink_to(folder)
    (sys / "class/block" / folder.name).symlink_to(folder)
    return folder


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    sys, proc = tmp_path / "sys", tmp_path / "proc"
    vda = block(sys, "pci0/virtio1/block/vda", "254:0")
    (vda / "size").write_text("4194304\n")
    (vda / "queue").mkdir()
    (vda / "queue/logical_block_size").write_text("512\n")
    block(sys, "pci0/virtio1/block/vda/vda2", "254:2", 2)
    vda4 = block(sys, "pci0/virtio1/block/vda/vda4", "254:4", 4)
    (vda4 / "size").write_text("2097152\n")
    dm = block(sys, "virtual/block/dm-0", "253:0")
    (dm / "slaves").mkdir()
    (dm / "slaves/vda4").symlink_to(vda4)
    (vda4 / "holders/dm-0").symlink_to(dm)
    block(sys, "pci0/virtio2/block/vdb", "254:16")
    block(sys, "pci0/virtio2/block/vdb/vdb1", "254:17", 1)
    block(sys, "pci0/virtio2/block/vdb/vdb2", "254:18", 2)
    block(sys, "pci0/virtio3/block/vdc", "254:32")
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(MOUNTINFO)
    (proc / "swaps").write_text("Filename Type Size Used Priority\n/dev/vdc partition 1 0 -2\n")
    return Machine(sys, proc)


def test_the_os_disk_is_found_through_partitions_and_device_mapper(machine: Machine) -> None:
    # / is on vda2, /var on dm-0 on vda4; /var/lib/docker (vdb1) is not the OS's.
    assert machine.os_disks() == {"vda": "/"}


def test_what_uses_a_disk_or_its_partitions(machine: Machine) -> None:
    assert machine.users(Device("/dev/vdb", "vdb", "vdb")) == [
        "/dev/vdb1 is mounted at /var/lib/docker",
        "/dev/vdb2 is mounted at /var/my data",
    ]
    assert machine.users(Device("/dev/vda4", "vda4", "vda", 4)) == ["/dev/vda4 is held by dm-0"]
    assert machine.users(Device("/dev/vdc", "vdc", "vdc")) == ["/dev/vdc is in use as swap"]
    assert machine.users(Device("/dev/vdb2", "vdb2", "vdb", 2))[0].endswith("/var/my data")


def test_geometry_in_logical_sectors(machine: Machine) -> None:
    assert machine.geometry(Device("/dev/vda", "vda", "vda")) == (512, 4194304)
    assert machine.geometry(Device("/dev/vda4", "vda4", "vda", 4)) == (512, 2097152)


@pytest.mark.skipif(
    not os.path.exists("/dev/loop0") or not stat.S_ISBLK(os.stat("/dev/loop0").st_mode),
    reason="needs a block device node (/dev/loop0)",
)
def test_a_path_is_resolved_to_its_disk_and_partition(tmp_path: Path) -> None:
    sys = tmp_path / "sys"
    rdev = os.stat("/dev/loop0").st_rdev
    block(sys, "virtual/block/loop0", f"{os.major(rdev)}:{os.minor(rdev)}")
    (tmp_path / "by-id").symlink_to("/dev/loop0")
    machine = Machine(sys, tmp_path)
    assert machine.device(str(tmp_path / "by-id")) == Device("/dev/loop0", "loop0", "loop0")
    assert machine.device(str(tmp_path / "missing")) is None
    with pytest.raises(ValueError, match="not a block device"):
        machine.device("/dev/null")


def test_sfdisk_json_and_blkid_export_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {
        "sfdisk": (0, json.dumps({"partitiontable": {
            "label": "gpt", "id": "AB-CD", "device": "/dev/nvme0n1", "unit": "sectors",
            "firstlba": 2048, "lastlba": 999966, "sectorsize": 512, "partitions": [
                {"node": "/dev/nvme0n1p12", "start": 2048, "size": 4096,
                 "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "X", "name": "a b"}]}})),
        "blkid": (0, "DEVNAME=/dev/vdb\nLABEL=my\\ disk\nUUID=1a-2b\nTYPE=ext4\nPTTYPE=gpt\n"),
    }  # fmt: skip
    machine = Machine()
    monkeypatch.setattr(machine, "run_status", lambda argv, stdin=None, ok=(0,): outputs[argv[0]])
    table = machine.table("/dev/nvme0n1")
    assert table is not None and (table.first, table.last, table.id) == (2048, 999966, "AB-CD")
    assert [(s.number, s.start, s.size, s.name) for s in table.slots] == [(12, 2048, 4096, "a b")]
    assert machine.probe("/dev/vdb") == Found("ext4", "my disk", "1a-2b", "gpt")
    outputs["blkid"] = (8, "")
    assert machine.probe("/dev/vdb").type.startswith("(several signatures")
