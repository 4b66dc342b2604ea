"""Boot the docker-host image in QEMU (TCG here) and check the running machine.

One VM (the session's keel_vm) serves every test in this module; the reboot and
watchdog tests come last because they restart the machine. The leftover-QEMU tests run a
small pytest session in a subprocess, since only from outside can one observe what a
session leaves behind after its teardown."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from composer.testing import KeelVM
from composer.testing.machine import FIRMWARE_HANDOVER, RebootWatch

pytestmark = pytest.mark.integration

# systemd-boot's vendor GUID for the Loader* EFI variables.
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"
# A variable of our own (random vendor GUID) to prove that NVRAM persists.
TEST_VARIABLE = "KeelNvramTest"
TEST_GUID = "6b65656c-6e76-4172-8d74-657374000001"
INNER_SUITE = """
import os, time
import pytest

@pytest.mark.integration
def test_boots(keel_vm):
    with open(os.environ["KEEL_PID_FILE"], "w") as f:
        f.write(str(keel_vm.pid))
    if os.environ.get("KEEL_INNER_HANG"):
        time.sleep(3600)  # the outer test interrupts the session here
"""


def qemu_pids_under(folder: Path) -> list[int]:
    """QEMU processes whose command line mentions folder (the VM folders live there)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # Not argv[0] alone: the tools tree's QEMU runs through the tree's loader.
        line = b" ".join(argv)
        if b"qemu-system" in line and str(folder).encode() in line:
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("ending", ["completes", "interrupted"])
def test_no_qemu_left_after_session(
    ending: str, keel_image: Path, tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_SUITE)
    pid_file = tmp_path / "qemu.pid"
    vm_folder = tmp_path / "vms"
    env = dict(os.environ, KEEL_VM_DIR=str(vm_folder), KEEL_PID_FILE=str(pid_file))
    if ending == "interrupted":
        env["KEEL_INNER_HANG"] = "1"
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        f"--rootdir={tmp_path}", f"--keel-image={keel_image}",
        f"--keel-boot-timeout={pytestconfig.getoption('--keel-boot-timeout')}",
        str(tmp_path / "test_inner.py"),
    ]  # fmt: skip
    output = tmp_path / "inner.log"
    with output.open("w") as log:
        # SIGINT as a terminal leaves it: a suite started in the background by a
        # non-interactive shell inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt in the inner session.
        inner = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not pid_file.exists() and inner.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert pid_file.exists(), f"the inner session never booted:\n{output.read_text()}"
        pid = int(pid_file.read_text())
        assert qemu_pids_under(vm_folder) == [pid]  # the observation works while it runs
        if ending == "interrupted":
            inner.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        inner.wait(timeout=300)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    out = output.read_text()
    if ending == "completes":
        assert inner.returncode == 0, out
    else:
        assert "KeyboardInterrupt" in out, out
    assert not Path(f"/proc/{pid}").exists(), f"QEMU {pid} still runs after the session"
    assert qemu_pids_under(vm_folder) == []


def test_kernel_command_line_selects_root_a(keel_host: Any) -> None:
    cmdline = keel_host.file("/proc/cmdline").content_string.split()
    assert "root=PARTLABEL=root-a" in cmdline


def test_root_is_read_only_erofs_from_root_a_through_dm_verity(keel_host: Any) -> None:
    root = keel_host.mount_point("/")
    assert root.filesystem == "erofs"
    assert "ro" in root.options
    assert root.device == "/dev/mapper/keel-root"
    # The one device under it is root-a.
    root_a = keel_host.check_output("readlink -f /dev/disk/by-partlabel/root-a")
    dev = keel_host.check_output("findmnt -no MAJ:MIN /").strip()  # findmnt pads it
    assert keel_host.check_output(f"ls /sys/dev/block/{dev}/slaves") == root_a.removeprefix("/dev/")
    assert keel_host.run("touch /keel-write-test").rc != 0


def test_dm_verity_checks_root_with_the_root_hash_of_the_command_line(keel_host: Any) -> None:
    words = keel_host.file("/proc/cmdline").content_string.split()
    verity = [w.removeprefix("keel.verity=") for w in words if w.startswith("keel.verity=")]
    assert len(verity) == 1, words
    root_hash, blocks, salt = verity[0].split(":")
    table = keel_host.check_output("dmsetup table keel-root").split()
    # start length verity version data hash data_bs hash_bs blocks hash_start alg root salt
    assert table[2:4] == ["verity", "1"]
    assert table[6:12] == ["4096", "4096", blocks, str(int(blocks) + 1), "sha256", root_hash]
    assert table[12] == salt
    # The image's first boot is counted (its entry has tries): a bad block restarts,
    # and so does an unreadable one (trixie's kernel 6.12 has restart_on_error).
    assert table[13:] == ["2", "restart_on_corruption", "restart_on_error"]
    # Every block read so far matched the tree (C would mean one did not).
    assert keel_host.check_output("dmsetup status keel-root").split()[-1] == "V"


def test_systemd_reached_multi_user(keel_host: Any) -> None:
    # SSH answers before the boot transaction is done; wait for it (non-zero when degraded).
    keel_host.run("systemctl is-system-running --wait")
    assert keel_host.check_output("systemctl is-active multi-user.target") == "active"


def test_default_image_is_debian_13_with_a_current_engine(keel_host: Any) -> None:
    assert keel_host.file("/etc/debian_version").content_string.startswith("13.")
    assert keel_host.package("docker.io").version.startswith("26.")
    # The CLI (with `docker system dial-stdio` for ssh:// clients) is on the host.
    assert keel_host.check_output("docker --version").startswith("Docker version 26.")


def test_first_boot_keeps_the_enablement_the_image_was_built_with(keel_host: Any) -> None:
    keel_host.run("systemctl is-system-running --wait")
    # systemd 257 applies presets on a first boot; Keel's preset keeps the engine on
    # socket activation and leaves out units Keel replaces or does not want.
    assert keel_host.check_output("systemctl is-enabled docker.socket") == "enabled"
    for unit in ("docker.service", "containerd.service", "ssh.socket", "sshd-keygen.service"):
        assert keel_host.run(f"systemctl is-enabled {unit}").stdout.strip() == "disabled", unit
    # networkd's Also= would switch this on with networkd itself: the image masks it.
    wait_online = "systemctl is-enabled systemd-networkd-wait-online.service"
    assert keel_host.run(wait_online).stdout.strip() == "masked"
    # systemd-repart.service found nothing to do but loaded loop and dm_mod for it at
    # every boot; the FUSE control mount loaded fuse. Masked: nothing asks for them.
    # trixie's early copy of systemd-tmpfiles-setup-dev and the udev credentials loader
    # cost over 2 s of early boot under emulation, for nothing a Keel host uses.
    masked = ("systemd-repart.service", "sys-fs-fuse-connections.mount",
              "systemd-tmpfiles-setup-dev-early.service",
              "systemd-udev-load-credentials.service")  # fmt: skip
    for unit in masked:
        assert keel_host.run(f"systemctl is-enabled {unit}").stdout.strip() == "masked", unit
    # What the early copy did, the other still does before udevd: the static nodes.
    assert keel_host.run("test -c /dev/fuse && test -c /dev/loop-control").rc == 0
    for module in ("loop", "dm_mod", "fuse"):
        state = keel_host.check_output(f"systemctl show -P ActiveState modprobe@{module}.service")
        assert state == "inactive", module
    # /etc and /var carry the build's update stamps: no first-boot ldconfig and friends.
    for unit in ("ldconfig.service", "systemd-journal-catalog-update.service"):
        assert keel_host.check_output(f"systemctl show -P ConditionResult {unit}") == "no", unit


def test_hostd_starts_after_sshd_and_keelctl_waits_on_its_socket(keel_host: Any) -> None:
    keel_host.run("systemctl is-system-running --wait")

    def monotonic(prop: str, unit: str) -> int:
        return int(keel_host.check_output(f"systemctl show -P {prop} {unit}"))

    # hostd starts once sshd is up: its Python leaves the CPUs to sshd.
    sshd_up = monotonic("ActiveEnterTimestampMonotonic", "ssh.service")
    assert monotonic("InactiveExitTimestampMonotonic", "keel-hostd.service") >= sshd_up > 0
    # systemd holds the API socket from early boot, root only, and hands it to hostd.
    assert keel_host.check_output("systemctl is-active keel-hostd.socket") == "active"
    assert keel_host.check_output("stat -c %a:%U /run/keel/hostd.sock") == "600:root"
    # With hostd stopped, keelctl's connection starts it, and is answered.
    keel_host.run_expect([0], "systemctl stop keel-hostd.service")
    assert keel_host.run("systemctl is-active keel-hostd.service").stdout.strip() == "inactive"
    assert "booted:" in keel_host.check_output("keelctl status")
    assert keel_host.check_output("systemctl is-active keel-hostd.service") == "active"


def test_python_bytecode_is_precompiled_and_never_rechecked(keel_host: Any) -> None:
    # The flags word of a .pyc: 1 is hash-based and never checked against its source.
    program = (
        "import importlib.util, json, sys, hostd.provision; "
        "print(*[open(importlib.util.cache_from_source(sys.modules[m].__file__), 'rb')"
        ".read(8)[4] for m in ('json', 'hostd.provision')])"
    )
    out = keel_host.check_output("PYTHONPATH=/usr/lib/keel/python python3 -c %s", program)
    assert out.split() == ["1", "1"]


def test_booted_entry_carries_tries_counter(keel_host: Any) -> None:
    variable = f"{EFIVARS}/LoaderBootCountPath-{LOADER_GUID}"
    assert keel_host.file(variable).exists, "systemd-boot did not count this boot"
    raw = base64.b64decode(keel_host.check_output("base64 -w0 %s", variable))
    # efivarfs prefixes the 4 attribute bytes; the value is a NUL-terminated UTF-16 path.
    path = raw[4:].decode("utf-16-le").rstrip("\0")
    assert re.search(r"\\loader\\entries\\[^\\]+\+\d+(-\d+)?\.conf$", path), path


def test_ssh_allows_keys_only(keel_vm: KeelVM, keel_host: Any) -> None:
    transport = paramiko.Transport(("127.0.0.1", keel_vm.ssh_port))
    try:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "root")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()
    settings = keel_host.check_output("sshd -T").splitlines()
    assert "passwordauthentication no" in settings
    assert "kbdinteractiveauthentication no" in settings


def test_sshd_forwards_no_x11_and_has_a_usable_key_of_every_configured_type(
    keel_host: Any,
) -> None:
    settings = keel_host.check_output("sshd -T").splitlines()
    assert "x11forwarding no" in settings
    host_keys = [line.split()[1] for line in settings if line.startswith("hostkey ")]
    assert host_keys == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ecdsa_key"]
    for key in host_keys:
        public = keel_host.check_output("ssh-keygen -y -f %s", key).split()[:2]
        assert public == keel_host.file(f"{key}.pub").content_string.split()[:2], key
        assert keel_host.file(key).mode == 0o600


def test_a_host_key_cut_short_is_made_again_and_a_good_one_kept(keel_host: Any) -> None:
    """What the next boot does after a power cut in the middle of writing a key:
    keel-ssh-keygen.service runs on every boot (here: restarted by hand)."""
    fingerprint = "ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub"
    kept = keel_host.check_output(fingerprint, "ed25519")
    broken = keel_host.check_output(fingerprint, "ecdsa")
    keel_host.check_output("truncate -s 100 /etc/ssh/ssh_host_ecdsa_key")
    keel_host.check_output("systemctl restart keel-ssh-keygen.service")
    assert keel_host.check_output(fingerprint, "ed25519") == kept
    assert keel_host.check_output(fingerprint, "ecdsa") != broken
    keel_host.check_output("ssh-keygen -y -f /etc/ssh/ssh_host_ecdsa_key")
    journal = keel_host.check_output("journalctl -b -u keel-ssh-keygen -o cat")
    assert "ssh_host_ecdsa_key does not load" in journal
    assert keel_host.check_output("sshd -t && echo valid") == "valid"


def test_debug_shell_on_the_virtio_console(keel_vm: KeelVM) -> None:
    result = keel_vm.serial_command("cat /proc/sys/kernel/random/boot_id; id -u")
    assert result.exit_status == 0
    assert result.output.split() == [keel_vm.boot_id(), "0"]
    assert keel_vm.serial_command("sh -c 'exit 3'").exit_status == 3
    assert keel_vm.serial_command("exit 4").exit_status == 4  # must not end the debug shell
    assert keel_vm.serial_command("echo still there").output == "still there\n"


def test_vm_folder_and_the_sockets_qemu_made_are_owner_only(keel_vm: KeelVM) -> None:
    folder = keel_vm.vm_dir
    assert folder.path.stat().st_mode & 0o777 == 0o700
    for sock in (folder.debug_socket, folder.console_socket, folder.qmp_socket):
        assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o700, sock
    assert folder.serial_log.stat().st_mode & 0o777 == 0o600


def test_reboot_keeps_the_vm_and_its_nvram(keel_vm: KeelVM) -> None:
    before_boot = keel_vm.boot_id()
    # A non-volatile EFI variable written now must survive the reboot, and it must be
    # stored in this VM's own vars file.
    marker = f"{TEST_VARIABLE}-{before_boot[:8]}"
    keel_vm.run(
        f"printf '\\007\\000\\000\\000{marker}' > {EFIVARS}/{TEST_VARIABLE}-{TEST_GUID}",
        check=True,
    )
    nvram = keel_vm.nvram
    nvram_inode = nvram.stat().st_ino
    pid = keel_vm.pid

    after_boot = keel_vm.reboot_and_wait(timeout=400)

    assert after_boot != before_boot
    assert keel_vm.pid == pid and keel_vm.is_running(), "the reboot left the QEMU process"
    assert nvram.parent == keel_vm.vm_dir.path
    assert nvram.stat().st_ino == nvram_inode, "the NVRAM file was replaced"
    # efivarfs files cannot seek, so tail reads them through a pipe.
    stored = keel_vm.run(f"cat {EFIVARS}/{TEST_VARIABLE}-{TEST_GUID} | tail -c +5", check=True)
    assert stored.stdout == marker
    assert TEST_VARIABLE.encode("utf-16-le") in nvram.read_bytes()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert any(arg.endswith(f"file={nvram}") and "if=pflash" in arg for arg in cmdline)


def test_watchdog_resets_a_hung_kernel(keel_vm: KeelVM) -> None:
    """PID 1 pets the chipset watchdog; when the kernel hangs (a panic with the
    kernel's own reboot turned off) the watchdog alone must bring the machine back."""
    # Right after the reboot test the boot may still be going on: PID 1 arms the
    # watchdog only once iTCO_wdt has loaded (about 30 s into a boot under TCG). A
    # crash before that would hang for good, which is what this test must not mistake
    # for a failure of the watchdog (seen in CI).
    keel_vm.run("systemctl is-system-running --wait", timeout=300)
    watchdog = keel_vm.run("wdctl", check=True).stdout
    assert "iTCO_wdt" in watchdog, watchdog
    state = keel_vm.run("cat /sys/class/watchdog/watchdog0/state", check=True).stdout
    assert state.strip() == "active", "PID 1 has not armed the watchdog"
    old = keel_vm.boot_id()
    pid = keel_vm.pid
    keel_vm.run(
        "echo 0 > /proc/sys/kernel/panic && echo 1 > /proc/sys/kernel/sysrq && "
        "systemd-run --on-active=1 sh -c 'echo c > /proc/sysrq-trigger'",
        check=True,
    )
    # The watchdog's work: 60 s without petting and the chipset's two countdowns, then
    # the firmware starts again after the panic, in the same QEMU (nothing else resets
    # it: the kernel's own reboot is off).
    panic = "Kernel panic - not syncing: sysrq triggered crash"
    deadline = time.monotonic() + 300
    while not _firmware_ran_after(keel_vm.serial_log, panic):
        assert keel_vm.pid == pid and keel_vm.is_running(), "QEMU went away after the panic"
        assert time.monotonic() < deadline, (
            f"no reset 300 s after the panic\n{keel_vm.serial_tail()}"
        )
        time.sleep(2)
    # Then a full boot under TCG. Its reset now and then hangs silently under emulation
    # (composer/testing/machine.py); the harness power-cycles it then, after the proof above.
    watch = RebootWatch(keel_vm)
    keel_vm.wait_for_new_boot(old, timeout=600, watch=watch)
    if watch.power_cycles == 0:
        assert keel_vm.pid == pid, "the machine was reset inside the same QEMU, not restarted"


def _firmware_ran_after(serial_log: Path, line: str) -> bool:
    """Whether the firmware handed over to the boot loader after the given line."""
    serial = serial_log.read_text(errors="replace")
    at = serial.rfind(line)
    return at >= 0 and FIRMWARE_HANDOVER.decode() in serial[at:]
