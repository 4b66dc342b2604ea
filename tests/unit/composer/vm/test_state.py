"""VM folders, state.json and process liveness."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.vm import state
from composer.vm.keys import ensure_key
from composer.vm.vmdir import VmDir, all_vms, check_name, existing_vm


def test_state_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "a")
    vm.path.mkdir()
    s = state.VmState(name="a", image="/i.qcow2", accel="tcg", memory_mib=2048, cpus=2)
    s.ssh_port = 4022
    state.save(vm, s)
    assert state.load(vm) == s
    assert [p.name for p in vm.path.iterdir()] == ["state.json"]  # no temp file left
    assert all_vms(tmp_path) == [vm]
    assert existing_vm(tmp_path, "a") == vm


def test_unknown_vm_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(KeelError):
        existing_vm(tmp_path, "nope")
    for bad in ("", "../x", "a/b", "-x", "x" * 80):
        with pytest.raises(KeelError):
            check_name(bad)


def test_socket_path_length_checked(tmp_path: Path) -> None:
    with pytest.raises(KeelError) as err:
        VmDir(tmp_path / ("d" * 120) / "vm").check_socket_paths()
    assert "KEEL_VM_DIR" in str(err.value)


def test_liveness_requires_our_qemu(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "vm")
    # A live process whose command line does not name this VM's QMP socket: a recycled
    # pid must not count as the VM running.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    mine = subprocess.Popen(
        [sys.executable, "-c", "import time,sys; time.sleep(30)", str(vm.qmp_socket.absolute())]
    )
    try:
        # Popen returns once exec has begun; the kernel fills /proc/PID/cmdline a moment
        # later, so wait for both command lines before judging them.
        for proc in (other, mine):
            deadline = time.monotonic() + 10
            while b"time.sleep(30)" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                assert time.monotonic() < deadline, "the child never showed its cmdline"
                time.sleep(0.01)
        assert not state.qemu_alive(vm, other.pid)
        assert state.qemu_alive(vm, mine.pid)
        s = state.VmState(name="vm", image="/i", accel="tcg", memory_mib=1, cpus=1, pid=mine.pid)
        s.phase = "running"
        assert state.effective_phase(vm, s) == "running"
        mine.kill()
        mine.wait()
        assert not state.qemu_alive(vm, mine.pid)
        assert state.effective_phase(vm, s) == "stopped"
    finally:
        other.kill()
        other.wait()


def test_key_pair_created_once_and_private(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    public = ensure_key(key, "keel-vm-x")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" keel-vm-x")
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ensure_key(key, "other") == public


def test_secure_boot_is_kept_and_older_state_files_read_as_without(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "a")
    vm.path.mkdir()
    s = state.VmState(name="a", image="/i", accel="tcg", memory_mib=1, cpus=1, secure_boot=True)
    state.save(vm, s)
    assert state.load(vm).secure_boot
    # A VM made before Secure Boot support has no such key; it was made without.
    vm.state_file.write_text(
        '{"name": "a", "image": "/i", "accel": "tcg", "memory_mib": 1, "cpus": 1}'
    )
    assert state.load(vm).secure_boot is False
