"""Real disks: `keel install` throughput to an image file, how long the first boot
takes to grow var on a 20 GiB disk (keel-grow-var.service: backup GPT header, var
partition, online ext4 resize), a later boot's no-op run, and how long `keelctl
install` takes in that VM to copy the host to a blank 4 GiB second disk.

Usage: python bench/disks.py [--image BUILD_DIR] [--disk-gib 20] [--json]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import build_root
from composer.core.progress import Progress
from composer.install.image import artifact_folder
from composer.install.installer import InstallRequest, install
from composer.testing import KeelVM
from composer.vm import runner

GIB = 1024**3
MIB = 1024**2


def work_seconds(journal: str) -> float:
    """The seconds keel-grow-var's summary line reports for its own work."""
    for line in journal.splitlines():
        if line.startswith("keel-grow-var: /var:") and line.endswith("s)"):
            return float(line.rsplit("(", 1)[1].rstrip("s)"))
    raise ValueError("no summary line from keel-grow-var in the journal")


def unit_run_seconds(show: str) -> float:
    """Seconds between ExecMainStart and ExecMainExit in `systemctl show` output."""
    values = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    started = int(values["ExecMainStartTimestampMonotonic"])
    ended = int(values["ExecMainExitTimestampMonotonic"])
    return round((ended - started) / 1e6, 2)


def install_figures(image: Path, folder: Path, size: int) -> dict[str, float]:
    result = install(
        InstallRequest(image, folder / "installed.raw", size=size), Progress(quiet=True)
    )
    written = result.written
    return {
        "image_mib": round(written.size / MIB),
        "data_mib": round(written.data / MIB),
        "write_seconds": round(written.seconds, 2),
        "write_mib_per_s": round(written.size / MIB / written.seconds),
        "total_seconds": round(result.seconds, 2),
        "total_mib_per_s": round(written.size / MIB / result.seconds),
    }


def growth_figures(image: Path, folder: Path, disk_gib: int) -> dict[str, float]:
    big = folder / f"disk-{disk_gib}g.qcow2"
    commands.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", image / "disk.qcow2", big, f"{disk_gib}G"]
    )  # fmt: skip
    second = folder / "second.qcow2"
    commands.run(["qemu-img", "create", "-q", "-f", "qcow2", second, "4G"])
    options = runner.RunOptions(
        image=big, die_with_parent=True, boot_timeout=420, extra_disks=(second,)
    )
    vm = KeelVM.start(options, folder / "vms")
    show = (
        "systemctl show -p ExecMainStartTimestampMonotonic -p ExecMainExitTimestampMonotonic "
        "keel-grow-var.service"
    )
    journal = "journalctl -b -u keel-grow-var.service -o cat"
    try:
        first = unit_run_seconds(vm.run(show, check=True).stdout)
        first_work = work_seconds(vm.run(journal, check=True).stdout)
        size = int(vm.run("lsblk -bdno SIZE $(findmnt -no SOURCE /var)", check=True).stdout)
        first_boot = vm.boot_seconds
        vm.reboot_and_wait(timeout=420)
        later = unit_run_seconds(vm.run(show, check=True).stdout)
        later_work = work_seconds(vm.run(journal, check=True).stdout)
        copied = vm.run("keelctl install /dev/vdb --yes --json", check=True, timeout=1800)
        install_seconds = json.loads(copied.stdout)["seconds"]
    finally:
        vm.stop(timeout=30)
    return {
        "disk_gib": disk_gib,
        "var_gib": round(size / GIB, 2),
        "first_boot_growth_seconds": first_work,
        "first_boot_unit_seconds": first,
        "later_boot_seconds": later_work,
        "later_boot_unit_seconds": later,
        "first_boot_ssh_seconds": round(first_boot, 1),
        "keelctl_install_seconds": install_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="build folder (default: newest docker-host)")
    parser.add_argument("--disk-gib", type=int, default=20, help="the grown disk's size")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    commands.echo_commands = False
    try:
        image = artifact_folder(args.image, build_root()).resolve()
        with tempfile.TemporaryDirectory(prefix="keel-bench-disks-") as scratch:
            print("==> keel install to an 8 GiB file", file=sys.stderr)
            started = time.monotonic()
            installed = install_figures(image, Path(scratch), 8 * GIB)
            print(f"    {time.monotonic() - started:.0f}s", file=sys.stderr)
            print(f"==> first boot on a {args.disk_gib} GiB disk, and a reboot", file=sys.stderr)
            grown = growth_figures(image, Path(scratch), args.disk_gib)
    except (KeelError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = {"install": installed, "growth": grown}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"keel install to a file: {installed['image_mib']} MiB image "
        f"({installed['data_mib']} MiB of data) written and synced in "
        f"{installed['write_seconds']}s ({installed['write_mib_per_s']} MiB/s); with read-back "
        f"verification {installed['total_seconds']}s ({installed['total_mib_per_s']} MiB/s)"
    )
    print(
        f"first-boot growth of var to {grown['var_gib']} GiB on a {grown['disk_gib']} GiB disk: "
        f"{grown['first_boot_growth_seconds']}s of work (header, partition, filesystem; the "
        f"unit with Python's start in early boot {grown['first_boot_unit_seconds']}s); a later "
        f"boot: {grown['later_boot_seconds']}s (unit {grown['later_boot_unit_seconds']}s); "
        f"first boot to SSH {grown['first_boot_ssh_seconds']}s"
    )
    print(
        f"keelctl install of the running host to a blank 4 GiB disk (TCG): "
        f"{grown['keelctl_install_seconds']}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
