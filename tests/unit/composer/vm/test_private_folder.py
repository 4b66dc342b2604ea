"""A VM's folder is its owner's only: it holds the VM's SSH key and the sockets of its
consoles, and the debug socket of a test image is a root shell in the guest. Checked
with the runner's own code: the folder it prepares, and what a process it launches
creates there."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from composer.vm import runner
from composer.vm.firmware import Firmware
from composer.vm.vmdir import VmDir

# Stands in for QEMU: creates the debug socket and a log in the VM folder (its cwd), as
# QEMU does with its chardev sockets and logfile, then waits to be killed.
FAKE_QEMU = """
import socket, time
listener = socket.socket(socket.AF_UNIX)
listener.bind("debug.sock")
listener.listen()
open("serial.log", "w").close()
time.sleep(60)
"""


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o777


@pytest.fixture
def permissive_umask() -> object:
    """The laxest umask a user may have (Debian's default is 022)."""
    previous = os.umask(0o002)
    yield
    os.umask(previous)


def test_the_runner_makes_the_vm_folder_owner_only(
    tmp_path: Path, permissive_umask: object
) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    vars_template = tmp_path / "VARS.fd"
    vars_template.write_bytes(b"vars")
    firmware = Firmware(tmp_path / "60.json", tmp_path / "CODE.fd", vars_template)
    vm = VmDir(tmp_path / "vms" / "one")
    runner._prepare(vm, disk, firmware, None)
    assert mode(vm.path) == 0o700
    assert mode(vm.key) == 0o600


def test_a_folder_left_open_by_an_older_keel_is_closed(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "old")
    vm.path.mkdir(mode=0o755)
    vm.path.chmod(0o755)
    vm.create()
    assert mode(vm.path) == 0o700


def test_sockets_and_logs_qemu_creates_are_owner_only(
    tmp_path: Path, permissive_umask: object
) -> None:
    vm = VmDir(tmp_path / "vm")
    vm.create()
    process = runner._launch([sys.executable, "-c", FAKE_QEMU], vm, False)
    try:
        deadline = time.monotonic() + 30
        while not (vm.debug_socket.exists() and vm.serial_log.exists()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert mode(vm.debug_socket) == 0o700
        assert mode(vm.serial_log) == 0o600
        with socket.socket(socket.AF_UNIX) as client:  # still usable by its owner
            client.connect(str(vm.debug_socket))
    finally:
        process.kill()
        process.wait()
    assert os.umask(0o002) == 0o002, "the runner must not change this process's umask"
