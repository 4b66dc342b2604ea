"""SSH port selection, and the retry when another process takes the port first."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.vm import runner, state
from composer.vm.firmware import Firmware, find_firmware
from composer.vm.ports import is_hostfwd_failure, pick_free_port
from composer.vm.vmdir import VmDir

QEMU_PORT_TAKEN = (
    "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:4022-:22: "
    "Could not set up host forwarding rule 'tcp:127.0.0.1:4022-:22'\n"
)
QEMU_OTHER_NETDEV_ERROR = (
    "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:4022-:22: "
    "Invalid parameter 'bogus'\n"
)


def test_pick_free_port_is_bindable() -> None:
    port = pick_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_hostfwd_failure_recognised() -> None:
    assert is_hostfwd_failure(QEMU_PORT_TAKEN)
    # Other -netdev errors echo "hostfwd=" too; they must not cause retries.
    assert not is_hostfwd_failure(QEMU_OTHER_NETDEV_ERROR)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _new_state(vm: VmDir) -> state.VmState:
    vm.path.mkdir(parents=True)
    return state.VmState(name=vm.name, image="/x.qcow2", accel="tcg", memory_mib=256, cpus=1)


class FakeQemu:
    """Stands in for QEMU: writes a message to qemu.log and exits at once."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], vm: VmDir, die: bool) -> subprocess.Popen[bytes]:
        self.argvs.append(argv)
        vm.qemu_log.write_text(self.messages.pop(0))
        return subprocess.Popen(["false"])


FW = Firmware(Path("/fw.json"), Path("/CODE.fd"), Path("/VARS.fd"))


def test_other_qemu_failure_is_not_retried(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "vm")
    fake = FakeQemu([QEMU_OTHER_NETDEV_ERROR, QEMU_OTHER_NETDEV_ERROR])
    with pytest.raises(KeelError) as err:
        runner._start_qemu(vm, _new_state(vm), FW, runner.RunOptions(), fake, pick_free_port)
    assert len(fake.argvs) == 1
    assert "Invalid parameter" in str(err.value)
    assert state.load(vm).phase == "failed"


def test_gives_up_after_several_taken_ports(tmp_path: Path) -> None:
    vm = VmDir(tmp_path / "vm")
    fake = FakeQemu([QEMU_PORT_TAKEN] * runner.PORT_ATTEMPTS)
    with pytest.raises(KeelError):
        runner._start_qemu(vm, _new_state(vm), FW, runner.RunOptions(), fake, pick_free_port)
    assert len(fake.argvs) == runner.PORT_ATTEMPTS


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
def test_real_qemu_retries_when_port_is_taken(tmp_path: Path, taken_port: int) -> None:
    """The race for real: the first port is taken by the time QEMU binds it."""
    fw = find_firmware()
    vm = VmDir(tmp_path / "vm")
    vm_state = _new_state(vm)
    vm.nvram.write_bytes(fw.vars_template.read_bytes())
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", vm.overlay, "16M"], check=True)
    vm.guest_config.write_text("{}")
    ports = [taken_port, pick_free_port()]
    options = runner.RunOptions(memory_mib=256, cpus=1, accel="tcg")
    process = runner._start_qemu(vm, vm_state, fw, options, runner._launch, lambda: ports.pop(0))
    try:
        assert process.poll() is None
        assert ports == []  # the second port was used
        saved = state.load(vm)
        assert saved.pid == process.pid
        assert saved.ssh_port != taken_port
        assert f"hostfwd=tcp:127.0.0.1:{saved.ssh_port}-:22" in " ".join(saved.qemu_argv)
    finally:
        runner._kill(process, vm)
    assert process.poll() is not None
