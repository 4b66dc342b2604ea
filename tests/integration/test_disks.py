"""Real disks (issue 14): var grows to fill a disk bigger than the image, `keel
install` writes an image file that boots with its config from the ESP, and `keelctl
install` copies a running host to a second disk that then boots on its own.

Four VMs, one after the other, all from the session's test image (keel_image):
- "grow": the image on a 20 GiB disk (a qcow2 over the image's, resized before the
  first boot); checked after the first boot, then once more after a reboot;
- "installed": an 8 GiB raw file written by `keel install --size 8G --config X.bu`,
  booted with no config through fw_cfg, as bare metal boots it, with a blank 4 GiB
  second disk: `keelctl install /dev/vdb --config X.ign --yes` writes it;
- "internal": that second disk booted alone (the USB stick pulled out).
Last, a fourth VM has its power cut while var grows (SIGKILL to QEMU), and the
next boot of the same disk finishes the growth with nothing on var lost.
The measured figures (growth time, install throughput) are printed for bench/disks.py
and the log."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.core.paths import vm_root
from composer.testing import KeelVM
from composer.vm import runner, state
from composer.vm.keys import ensure_key
from composer.vm.vmdir import VmDir, vm_dir

pytestmark = pytest.mark.integration

GIB = 1024**3
MIB = 1024**2
BOOT_TIMEOUT = 420.0
BIG_DISK = 20 * GIB
INSTALL_SIZE = 8 * GIB
SECOND_DISK = "internal.qcow2"
SECOND_SIZE = 4 * GIB
# A file the install's config writes; its presence says the ESP's config was applied.
MARKER = "/etc/keel-test/installed-by"
BUTANE = """\
variant: keel
version: 1.0.0
passwd:
  users:
    - name: root
      ssh_authorized_keys:
        - {key}
storage:
  files:
    - path: {marker}
      contents:
        inline: keel install
"""


def out(vm: KeelVM, command: str) -> str:
    return vm.run(command, check=True, timeout=300).stdout.strip()


def partitions(vm: KeelVM) -> dict[str, dict[str, int]]:
    """name -> start, size in bytes of the boot disk's partitions, as the disk has them."""
    table = json.loads(out(vm, "sfdisk --json /dev/vda"))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return {
        p["name"]: {"start": p["start"] * sector, "size": p["size"] * sector}
        for p in table["partitions"]
    }


def var_sizes(vm: KeelVM) -> tuple[int, int]:
    """(partition, filesystem) bytes of /var; the filesystem's from its superblock (df
    leaves out ext4's own metadata, a few hundred MiB at this size)."""
    partition = int(out(vm, "lsblk -bdno SIZE $(findmnt -no SOURCE /var)"))
    header = out(vm, "dumpe2fs -h $(findmnt -no SOURCE /var) 2>/dev/null")
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    filesystem = int(fields["Block count"]) * int(fields["Block size"])
    return partition, filesystem


def grow_seconds(vm: KeelVM) -> tuple[float, float]:
    """How long keel-grow-var's work took on this boot (its summary line says), and
    the whole unit (Python's start in a busy early boot included)."""
    show = out(
        vm,
        "systemctl show -p ExecMainStartTimestampMonotonic "
        "-p ExecMainExitTimestampMonotonic keel-grow-var.service",
    )
    values = dict(line.split("=", 1) for line in show.splitlines())
    started = int(values["ExecMainStartTimestampMonotonic"])
    ended = int(values["ExecMainExitTimestampMonotonic"])
    summary = out(
        vm, "journalctl -b -u keel-grow-var.service -o cat | grep '^keel-grow-var: /var:'"
    )
    work = float(summary.rsplit("(", 1)[1].rstrip("s)"))
    return work, (ended - started) / 1e6


# The VMs this module started, so a test can make sure it runs alone.
started: list[KeelVM] = []


def boot(options: runner.RunOptions) -> KeelVM:
    vm = KeelVM.start(options, vm_root())
    started.append(vm)
    print(f"{vm.name}: SSH after {vm.boot_seconds:.0f}s")
    return vm


def finish(vm: KeelVM) -> None:
    try:
        vm.stop()
    finally:
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


def big_disk(keel_image: Path, folder: Path) -> Path:
    big = folder / "disk-20g.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
         "-b", str(keel_image / "disk.qcow2"), str(big), str(BIG_DISK)],
        check=True,
    )  # fmt: skip
    return big


@pytest.fixture(scope="module")
def grow_vm(keel_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelVM]:
    # A 20 GiB qcow2 over the image's disk: the image's bytes, then zeros, as a disk
    # the image was written to with dd; the runner's own overlay takes its size.
    big = big_disk(keel_image, tmp_path_factory.mktemp("grow"))
    options = runner.RunOptions(
        image=big,
        name=f"grow-{secrets.token_hex(2)}",
        boot_timeout=BOOT_TIMEOUT,
        die_with_parent=True,
    )
    vm = boot(options)
    try:
        yield vm
    finally:
        finish(vm)


def test_first_boot_grows_var_to_the_end_of_a_bigger_disk(
    grow_vm: KeelVM, keel_image: Path
) -> None:
    manifest = json.loads((keel_image / "manifest.json").read_text())
    built = {p["label"]: p for p in manifest["disk"]["partitions"]}
    now = partitions(grow_vm)
    # The ESP and the root slots never move; var keeps its start and takes the rest.
    for label in ("esp", "root-a", "root-b"):
        assert now[label] == {"start": built[label]["start"], "size": built[label]["size"]}
    var = now["var"]
    assert var["start"] == built["var"]["start"]
    assert BIG_DISK - (var["start"] + var["size"]) < 2 * MIB
    # 20 GiB less the ESP and two root slots (1.4 GiB): 18.6 GiB, over 19 GB.
    partition, filesystem = var_sizes(grow_vm)
    assert partition == var["size"] and partition >= 19 * 10**9
    assert 0 <= partition - filesystem < 16 * MIB
    assert "No errors detected" in grow_vm.run("sfdisk --verify /dev/vda").stdout
    journal = out(grow_vm, "journalctl -b -u keel-grow-var.service -o cat")
    assert "moving the backup GPT header" in journal
    assert "growing vda4" in journal and "growing the filesystem on /var" in journal
    status = out(grow_vm, "keelctl status")
    assert "a 20.0 GiB disk" in status, status
    work, unit = grow_seconds(grow_vm)
    print(
        f"figure: first-boot growth of var to {partition / GIB:.1f} GiB took {work:.1f}s "
        f"(the unit {unit:.1f}s)"
    )
    # sshd does not wait for it (nor for keel-provision, which sshd is ordered after).
    before_ssh = out(grow_vm, "systemctl list-dependencies --after --all --plain ssh.service")
    assert "keel-grow-var.service" not in before_ssh


def test_a_reboot_leaves_var_as_it_is(grow_vm: KeelVM) -> None:
    before = partitions(grow_vm), var_sizes(grow_vm)[0]
    grow_vm.reboot_and_wait(timeout=BOOT_TIMEOUT)
    assert (partitions(grow_vm), var_sizes(grow_vm)[0]) == before
    assert "No errors detected" in grow_vm.run("sfdisk --verify /dev/vda").stdout
    journal = out(grow_vm, "journalctl -b -u keel-grow-var.service -o cat")
    assert "growing" not in journal and "moving" not in journal
    assert "partition vda4 18.6 GiB, disk /dev/vda 20.0 GiB" in journal
    work, unit = grow_seconds(grow_vm)
    print(f"figure: keel-grow-var on a later boot took {work:.1f}s (the unit {unit:.1f}s)")


# --- keel install to a file, then boot it --------------------------------------------


def new_vm_key(name: str) -> tuple[VmDir, str]:
    """The folder and public key of a VM not started yet: the runner reuses a key its
    folder already has, so a config can authorize the VM before it boots."""
    folder = vm_dir(vm_root(), name)
    folder.create()
    return folder, ensure_key(folder.key, comment=f"keel-vm-{name}")


@pytest.fixture(scope="module")
def install_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def installed_vm(keel_image: Path, grow_vm: KeelVM, install_folder: Path) -> Iterator[KeelVM]:
    finish(grow_vm)  # one VM at a time
    folder = install_folder
    name = f"installed-{secrets.token_hex(2)}"
    vm_folder, public_key = new_vm_key(name)
    config = folder / "host.bu"
    config.write_text(BUTANE.format(key=public_key, marker=MARKER))
    disk = folder / "disk-8g.raw"
    # The internal disk `keelctl install` writes to (test_keelctl_install...): blank.
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(folder / SECOND_DISK), str(SECOND_SIZE)],
        check=True,
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "composer.cli", "install", str(keel_image), "--to", str(disk),
         "--size", "8G", "--config", str(config)],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    print(result.stdout.strip())
    raw_mib = (keel_image / "disk.raw").stat().st_size / MIB
    print(f"figure: keel install of {raw_mib:.0f} MiB to a file took {seconds:.1f}s "
          f"({raw_mib / seconds:.0f} MiB/s, write, verify and config included)")  # fmt: skip
    assert disk.stat().st_size == INSTALL_SIZE
    options = runner.RunOptions(
        image=disk,
        name=name,
        boot_timeout=BOOT_TIMEOUT,
        die_with_parent=True,
        fw_cfg_config=False,
        extra_disks=(folder / SECOND_DISK,),
    )
    try:
        vm = boot(options)
    except BaseException:
        shutil.rmtree(vm_folder.path, ignore_errors=True)
        raise
    try:
        yield vm
    finally:
        finish(vm)


def test_an_installed_file_boots_with_the_config_from_its_esp(installed_vm: KeelVM) -> None:
    state = json.loads(out(installed_vm, "cat /var/lib/keel/provisioned.json"))
    assert state["result"] == "applied", state
    assert state["source"] == "/efi/keel/provision.ign", state
    assert out(installed_vm, f"cat {MARKER}") == "keel install"
    partition, filesystem = var_sizes(installed_vm)
    # 8 GiB less the ESP and two root slots: about 6.6 GiB.
    assert 6.5 * GIB < partition < 7 * GIB
    assert 0 <= partition - filesystem < 16 * MIB
    assert "No errors detected" in installed_vm.run("sfdisk --verify /dev/vda").stdout


# --- keelctl install: from the booted disk to a second one ----------------------------


def ignition_for(butane: str, folder: Path) -> str:
    source = folder / "internal.bu"
    source.write_text(butane)
    result = subprocess.run(
        [sys.executable, "-m", "composer.cli", "butane", str(source)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def unchanged_parts(vm: KeelVM) -> list[str]:
    """What must not change on the disk booted from: its table and the partitions not
    in use for writing (var is: the running host writes its journal there). The ESP is
    unmounted first: a mounted FAT filesystem has its dirty flag set."""
    return out(
        vm,
        "systemctl stop efi.mount && sfdisk --dump /dev/vda && "
        "sha256sum /dev/vda1 /dev/vda2 /dev/vda3",
    ).splitlines()


def test_keelctl_install_copies_the_booted_host_to_a_second_disk(
    installed_vm: KeelVM, install_folder: Path, tmp_path: Path
) -> None:
    source = installed_vm
    name = f"internal-{secrets.token_hex(2)}"
    ignition = ignition_for(
        BUTANE.format(key=new_vm_key(name)[1], marker=MARKER).replace("keel install", "keelctl"),
        tmp_path,
    )
    # The health gate renames this boot's loader entry on the ESP when it blesses it.
    out(source, "until systemctl is-active -q keel-health.service; do sleep 2; done")
    before = unchanged_parts(source)
    identity = out(source, "cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub")
    version = out(source, "grep IMAGE_VERSION /usr/lib/os-release")
    source.run(f"cat > /tmp/internal.ign <<'KEEL_EOF'\n{ignition}\nKEEL_EOF", check=True)
    # The disk booted from, a partition, and a config that is not valid are refused
    # before anything is written.
    for refused, why in (
        ("keelctl install /dev/vda --yes", "holds this machine's own filesystems"),
        ("keelctl install /dev/vdb1 --yes", "does not exist"),
        ("echo '{}' > /tmp/bad.ign; keelctl install /dev/vdb --config /tmp/bad.ign --yes",
         "ignition.version"),
        ("keelctl install /dev/vdb < /dev/null", "Add --yes"),
    ):  # fmt: skip
        result = source.run(refused)
        assert result.exit_status == 1 and why in result.stderr, (refused, result.stderr)
    assert out(source, "blkid -p /dev/vdb || echo blank") == "blank"
    started = time.monotonic()
    result = source.run("keelctl install /dev/vdb --config /tmp/internal.ign --yes", timeout=1800)
    seconds = time.monotonic() - started
    assert result.exit_status == 0, result.stderr
    print(result.stderr + result.stdout)
    print(f"figure: keelctl install to a {SECOND_SIZE // GIB} GiB disk took {seconds:.1f}s (TCG)")
    # The running host still finds its own ESP, slots and var by name: the new disk's
    # real names are for its next boot.
    for label, node in (("esp", "vda1"), ("root-a", "vda2"), ("var", "vda4")):
        assert out(source, f"readlink -f /dev/disk/by-partlabel/{label}") == f"/dev/{node}"
    names = out(source, "sfdisk --json /dev/vdb")
    assert [p["name"] for p in json.loads(names)["partitiontable"]["partitions"]] == [
        "esp",
        "root-a",
        "root-b",
        "var",
    ]
    assert unchanged_parts(source) == before
    source.stop()

    new = boot(
        runner.RunOptions(
            image=install_folder / SECOND_DISK, name=name, boot_timeout=BOOT_TIMEOUT,
            die_with_parent=True, fw_cfg_config=False,
        )
    )  # fmt: skip
    try:
        assert out(new, "grep IMAGE_VERSION /usr/lib/os-release") == version
        assert out(new, "cat /proc/cmdline").split().count("keel.slot=a") == 1
        new_identity = out(new, "cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub")
        old_id, old_key = identity.splitlines()
        new_id, new_key = new_identity.splitlines()
        assert new_id != old_id and new_key != old_key
        state = json.loads(out(new, "cat /var/lib/keel/provisioned.json"))
        assert state["result"] == "applied" and state["source"] == "/efi/keel/provision.ign"
        assert out(new, f"cat {MARKER}") == "keelctl"
        partition, _ = var_sizes(new)
        assert partition > 2.5 * GIB  # 4 GiB less the ESP and the slots: grown at first boot
        assert "No errors detected" in new.run("sfdisk --verify /dev/vda").stdout
    finally:
        finish(new)


# --- a power cut while var grows (opt-in) ----------------------------------------------


def wait_for_console(vm: VmDir, text: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.serial_log.exists() and text in vm.serial_log.read_bytes():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear on {vm.name}'s console in {timeout:.0f}s")


def test_a_power_cut_while_var_grows_is_finished_by_the_next_boot(
    keel_image: Path, tmp_path: Path
) -> None:
    for vm in started:
        finish(vm)  # one VM at a time
    name = f"cut-{secrets.token_hex(2)}"
    folder = vm_dir(vm_root(), name)
    options = runner.RunOptions(
        image=big_disk(keel_image, tmp_path), name=name, boot_timeout=BOOT_TIMEOUT,
        die_with_parent=True,
    )  # fmt: skip
    outcome: dict[str, BaseException] = {}

    def first_boot() -> None:
        try:
            runner.start(options, vm_root())
        except BaseException as error:  # QEMU killed below: the start fails
            outcome["error"] = error

    thread = threading.Thread(target=first_boot, daemon=True)
    thread.start()
    try:
        # The online resize of the filesystem is the step that takes time: cut the
        # power (SIGKILL, no shutdown, nothing flushed) as soon as it begins.
        wait_for_console(folder, b"keel-grow-var: growing the filesystem", BOOT_TIMEOUT)
        os.kill(state.load(folder).pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert "error" in outcome
        vm = boot(options)  # the same disk, powered on again
    except BaseException:
        runner.stop(folder, hard=True)
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    try:
        journal = out(vm, "journalctl -b -u keel-grow-var.service -o cat")
        print(journal)
        var = partitions(vm)["var"]
        assert BIG_DISK - (var["start"] + var["size"]) < 2 * MIB
        partition, filesystem = var_sizes(vm)
        assert 0 <= partition - filesystem < 16 * MIB
        assert "No errors detected" in vm.run("sfdisk --verify /dev/vda").stdout
        # The var seed the image shipped (a copy stays on the root slot) is all there.
        seed = "cd /usr/share/factory/var && find lib/dpkg -type f | sort | xargs sha256sum"
        assert out(vm, seed) == out(vm, seed.replace("/usr/share/factory/var", "/var"))
    finally:
        finish(vm)
