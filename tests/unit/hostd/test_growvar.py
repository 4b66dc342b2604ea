"""Growing var on a bigger disk (hostd/growvar.py) with the real tools on a disk image
file: sfdisk moves the backup header, systemd-repart grows the partition; the
kernel's part (its view of the partition, the online ext4 resize) is played by the
test host, which resizes a separate filesystem image offline."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hostd import growvar
from hostd.formats.growth import VAR_DEFINITION, VAR_TYPE, var_definition
from hostd.growvar import SLACK, Header, Host, LeftAlone, Partition, Plan, grow, plan

MIB = 1024**2
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
IMAGE_LAYOUT = [("esp", ESP_TYPE, 4), ("root-a", ROOT_TYPE, 4), ("root-b", ROOT_TYPE, 4)]
VAR_MIB = 16
IMAGE_BYTES = (1 + 4 * 3 + VAR_MIB + 1) * MIB

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sfdisk", "systemd-repart", "mkfs.ext4")),
    reason="needs sfdisk, systemd-repart and mkfs.ext4",
)


def sfdisk_json(disk: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True)
    return dict(json.loads(out.stdout)["partitiontable"])


def entries(disk: Path) -> dict[str, tuple[int, int, str]]:
    """name -> (start, size, type) in bytes."""
    return {
        p["name"]: (p["start"] * 512, p["size"] * 512, p["type"])
        for p in sfdisk_json(disk)["partitions"]
    }


def verify(disk: Path) -> str:
    out = subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, text=True)
    return out.stdout + out.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_disk(
    folder: Path, disk_bytes: int, var_type: str = VAR_TYPE, extra: str = ""
) -> tuple[Path, Path]:
    """A Keel-shaped disk image written at its image size and then made bigger (as
    `dd` to a larger disk leaves it), and var's ext4 filesystem as a file of its own.
    extra: sfdisk lines of partitions after var (the image gets room for them)."""
    disk = folder / "disk.raw"
    with disk.open("wb") as handle:
        handle.truncate(IMAGE_BYTES + (2 * MIB if extra else 0))
    lines, start = ["label: gpt", "unit: sectors", ""], MIB
    for name, kind, size in [*IMAGE_LAYOUT, ("var", var_type, VAR_MIB)]:
        lines.append(f'start={start // 512}, size={size * MIB // 512}, type={kind}, name="{name}"')
        start += size * MIB
    subprocess.run(
        ["sfdisk", "--quiet", str(disk)], input="\n".join(lines) + "\n" + extra, text=True,
        check=True,
    )  # fmt: skip
    with disk.open("r+b") as handle:
        handle.truncate(disk_bytes)
    varfs = folder / "var.ext4"
    with varfs.open("wb") as handle:
        handle.truncate(VAR_MIB * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(varfs)], check=True)
    return disk, varfs


class DiskFileHost(Host):
    """The machine as grow() sees it, over a disk image file: var is partition 4 and
    / is partition 2 of "vda"; the kernel's view of a partition is what the table on
    the file says, and the online resize is resize2fs on var's own file."""

    def __init__(self, root: Path, disk: Path, varfs: Path, cap: int = 0) -> None:
        super().__init__(root=root)
        self.disk, self.varfs = disk, varfs
        self.calls: list[str] = []
        self.mounts = {"/var": (252, 4, "ext4"), "/": (252, 2, "erofs")}
        self.disks = {4: "vda", 2: "vda"}
        (root / VAR_DEFINITION).parent.mkdir(parents=True, exist_ok=True)
        (root / VAR_DEFINITION).write_text(var_definition(cap))

    def mount_source(self, mountpoint: str) -> tuple[int, int, str]:
        return self.mounts[mountpoint]

    def partition(self, major: int, minor: int) -> Partition:
        for part in sfdisk_json(self.disk)["partitions"]:
            if part["node"].endswith(str(minor)):
                disk = self.disks[minor]
                return Partition(
                    f"{disk}{minor}", disk, minor, part["start"] * 512, part["size"] * 512
                )
        raise LeftAlone("no such partition")

    def disk_size(self, disk: str) -> int:
        return self.disk.stat().st_size

    def sector_size(self, disk: str) -> int:
        return 512

    def node(self, name: str) -> Path:
        return self.disk if name == "vda" else self.varfs

    def relocate_backup_header(self, node: Path) -> None:
        self.calls.append("relocate")
        super().relocate_backup_header(node)

    def grow_partition(self, node: Path) -> None:
        self.calls.append("grow partition")
        super().grow_partition(node)

    def grow_filesystem(self, mountpoint: str) -> None:
        self.calls.append("grow filesystem")
        size = self.partition(252, 4).size
        with self.varfs.open("r+b") as handle:
            handle.truncate(size)
        subprocess.run(["resize2fs", "-f", str(self.varfs)], capture_output=True, check=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


def test_var_grows_to_the_end_of_the_disk_and_nothing_else_moves(
    tmp_path: Path, root: Path
) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    assert "The backup GPT table is not on the end of the device" in verify(disk)
    before = entries(disk)
    host = DiskFileHost(root, disk, varfs)
    summary = grow(host)
    assert host.calls == ["relocate", "grow partition", "grow filesystem"]
    after = entries(disk)
    for name in ("esp", "root-a", "root-b"):
        assert after[name] == before[name]
    start, size, kind = after["var"]
    assert (start, kind) == (before["var"][0], VAR_TYPE)
    assert 96 * MIB - (start + size) < MIB  # up to the backup GPT at the very end
    assert "No errors detected" in verify(disk)
    assert size - host.filesystem_size(varfs) < SLACK
    assert summary.startswith("/var: filesystem 0.1 GiB, partition vda4 0.1 GiB, disk ")


def test_a_second_boot_changes_nothing(tmp_path: Path, root: Path) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    grow(DiskFileHost(root, disk, varfs))
    table, filesystem = digest(disk), digest(varfs)
    again = DiskFileHost(root, disk, varfs)
    grow(again)
    assert again.calls == []
    assert (digest(disk), digest(varfs)) == (table, filesystem)


def test_the_cap_stops_var_and_the_backup_header_still_moves(tmp_path: Path, root: Path) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    host = DiskFileHost(root, disk, varfs, cap=48 * MIB)
    grow(host)
    assert entries(disk)["var"][1] == 48 * MIB
    assert "No errors detected" in verify(disk)
    # At its cap, var is not grown again, but a disk made bigger later still gets its
    # backup header moved to the new end.
    with disk.open("r+b") as handle:
        handle.truncate(160 * MIB)
    later = DiskFileHost(root, disk, varfs, cap=48 * MIB)
    grow(later)
    assert later.calls == ["relocate"]
    assert entries(disk)["var"][1] == 48 * MIB
    assert "No errors detected" in verify(disk)


def test_var_already_at_its_cap_keeps_its_size_and_only_the_header_moves(
    tmp_path: Path, root: Path
) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    host = DiskFileHost(root, disk, varfs, cap=VAR_MIB * MIB)
    grow(host)
    assert host.calls == ["relocate"]
    assert entries(disk)["var"][1] == VAR_MIB * MIB
    assert "No errors detected" in verify(disk)


class CutAfter(DiskFileHost):
    """A power cut right after one step: nothing after it happens on this boot."""

    def __init__(self, step: str, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.step = step

    def relocate_backup_header(self, node: Path) -> None:
        super().relocate_backup_header(node)
        if self.step == "relocate":
            raise SystemExit("power cut")

    def grow_partition(self, node: Path) -> None:
        super().grow_partition(node)
        if self.step == "grow partition":
            raise SystemExit("power cut")


@pytest.mark.parametrize(
    ("cut", "next_boot"),
    [
        ("relocate", ["grow partition", "grow filesystem"]),
        ("grow partition", ["grow filesystem"]),
    ],
)
def test_the_next_boot_finishes_what_a_power_cut_interrupted(
    cut: str, next_boot: list[str], tmp_path: Path, root: Path
) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    with pytest.raises(SystemExit):
        grow(CutAfter(cut, root, disk, varfs))
    assert "No errors detected" in verify(disk)  # every step leaves a whole table
    host = DiskFileHost(root, disk, varfs)
    grow(host)
    assert host.calls == next_boot
    assert 96 * MIB - sum(entries(disk)["var"][:2]) < MIB


@pytest.mark.parametrize(
    "change",
    ["var on another disk than /", "var not ext4", "var not of var's type", "var not last",
     "two var partitions"],
)  # fmt: skip
def test_an_unexpected_layout_leaves_the_disk_untouched(
    change: str, tmp_path: Path, root: Path
) -> None:
    var_type, extra = VAR_TYPE, ""
    after_var = f"start={(IMAGE_BYTES - MIB) // 512}, size=2048"
    if change == "var not of var's type":
        var_type = LINUX_TYPE
    if change == "var not last":
        extra = f'{after_var}, type={LINUX_TYPE}, name="x"\n'
    if change == "two var partitions":
        extra = f'{after_var}, type={VAR_TYPE}, name="y"\n'
    disk, varfs = make_disk(tmp_path, 96 * MIB, var_type, extra)
    host = DiskFileHost(root, disk, varfs)
    if change == "var on another disk than /":
        host.disks[2] = "vdb"
    if change == "var not ext4":
        host.mounts["/var"] = (252, 4, "xfs")
    before = digest(disk), digest(varfs)
    with pytest.raises(LeftAlone):
        grow(host)
    assert host.calls == []
    assert (digest(disk), digest(varfs)) == before


def test_plan_never_shrinks_a_var_larger_than_its_cap() -> None:
    var = Partition("vda4", "vda", 4, 100 * MIB, 900 * MIB)
    disk = 2000 * MIB
    at_end = Header(512, disk // 512 - 1, (disk - 512 - 16384) // 512 - 1)
    todo = plan(var, at_end, disk, cap=500 * MIB)
    assert (todo.relocate, todo.grow_partition, todo.target_size) == (False, False, 900 * MIB)
    # The same table on a disk twice the size: the header moves, var may take the rest.
    todo = plan(var, at_end, 2 * disk, cap=0)
    assert todo.relocate and todo.grow_partition
    assert todo.target_size == 2 * disk - 512 - 16384 - 100 * MIB
    assert plan(var, at_end, 2 * disk, cap=1000 * MIB).target_size == 1000 * MIB


def test_plan_leaves_a_var_that_fills_the_disk_alone() -> None:
    disk = 2000 * MIB
    header = Header(512, disk // 512 - 1, (disk - 512 - 16384) // 512 - 1)
    var = Partition("vda4", "vda", 4, 100 * MIB, disk - 100 * MIB - MIB)
    assert plan(var, header, disk, cap=0) == Plan(False, False, disk - 512 - 16384 - 100 * MIB)


def test_main_never_fails_the_boot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(host: Host, mountpoint: str = "/var") -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(growvar, "grow", broken)
    assert growvar.main() == 0
    assert "keel-grow-var: failed: RuntimeError: a bug" in capsys.readouterr().out


# --- reading the real machine's files ---------------------------------------------


def fake_sysfs(sys: Path) -> None:
    for name, number, start, size in (("vda2", 2, 2048 * 5, 8192), ("vda4", 4, 2048 * 13, 32768)):
        part = sys / "devices/virtual/block/vda" / name
        part.mkdir(parents=True)
        (part / "partition").write_text(f"{number}\n")
        (part / "start").write_text(f"{start}\n")
        (part / "size").write_text(f"{size}\n")
        (sys / "dev/block").mkdir(parents=True, exist_ok=True)
        os.symlink(part, sys / "dev/block" / f"252:{number}")
    (sys / "class/block/vda").mkdir(parents=True)
    (sys / "class/block/vda/size").write_text("41943040\n")


def test_the_host_reads_var_and_its_disk_from_mountinfo_and_sysfs(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "22 1 252:2 / / ro,relatime shared:1 - erofs /dev/vda2 ro\n"
        "23 22 252:4 / /var rw,noatime shared:2 - ext4 /dev/vda4 rw\n"
    )
    fake_sysfs(tmp_path / "sys")
    host = Host(root=tmp_path, sys=tmp_path / "sys")
    assert host.mount_source("/var") == (252, 4, "ext4")
    assert host.partition(252, 4) == Partition("vda4", "vda", 4, 2048 * 13 * 512, 32768 * 512)
    assert host.disk_size("vda") == 20 * 1024**3
    with pytest.raises(LeftAlone, match="nothing is mounted on /srv"):
        host.mount_source("/srv")


def test_an_ext4_superblock_gives_the_filesystem_size(tmp_path: Path) -> None:
    image = tmp_path / "fs"
    with image.open("wb") as handle:
        handle.truncate(40 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)], check=True)
    assert Host().filesystem_size(image) == 40 * MIB
    (tmp_path / "zeros").write_bytes(bytes(4096))
    with pytest.raises(LeftAlone, match="no ext4"):
        Host().filesystem_size(tmp_path / "zeros")


def test_status_sizes_come_from_the_mounted_var(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "23 22 252:4 / /var rw,noatime shared:2 - ext4 /dev/vda4 rw\n"
    )
    (tmp_path / "var").mkdir()
    fake_sysfs(tmp_path / "sys")
    sizes = growvar.summary(Host(root=tmp_path, sys=tmp_path / "sys"))
    assert sizes["partition"] == 32768 * 512
    assert sizes["disk"] == 20 * 1024**3
    assert sizes["device"] == "vda4"
    assert int(sizes["filesystem"]) > 0


def test_var_grows_when_root_is_a_dm_verity_device(tmp_path: Path, root: Path) -> None:
    disk, varfs = make_disk(tmp_path, 96 * MIB)
    host = DiskFileHost(root, disk, varfs)
    # / is dm-0 (253:0), and sysfs says its one slave is vda2 (252:2).
    host.mounts["/"] = (253, 0, "erofs")
    host.sys = tmp_path / "sys"
    slave = host.sys / "dev/block/253:0/slaves/vda2"
    slave.mkdir(parents=True)
    (slave / "dev").write_text("252:2\n")
    grow(host)
    assert host.calls == ["relocate", "grow partition", "grow filesystem"]


def test_sysblock_finds_the_one_device_under_a_mapper_device(tmp_path: Path) -> None:
    from hostd import sysblock

    (tmp_path / "253:1/slaves/vda2").mkdir(parents=True)
    (tmp_path / "253:1/slaves/vda2/dev").write_text("252:2\n")
    assert sysblock.underlying(253, 1, tmp_path) == (252, 2)
    (tmp_path / "253:1/slaves/vda3").mkdir()  # two under it: no single answer
    assert sysblock.underlying(253, 1, tmp_path) == (253, 1)
    assert sysblock.underlying(252, 2, tmp_path) == (252, 2)  # a partition has none
