"""The harness's watch for a guest that went silent in the firmware after a reboot."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from composer.testing import machine
from composer.vm import runner


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The harness's monotonic clock, moved by hand: clock[0] += seconds."""
    now = [1000.0]
    monkeypatch.setattr(machine.time, "monotonic", lambda: now[0])
    return now


def test_silence_after_the_restart_message_is_reported_once(
    tmp_path: Path, clock: list[float]
) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"[  149.7] reboot: Restarting system\r\n[  149.7] reboot: machine restart\r\n")
    watch = machine._SilenceAfterRestart(log)
    assert not watch.stuck()  # first look: remembers the size
    clock[0] += machine.SILENT_AFTER_RESTART - 1
    assert not watch.stuck()
    clock[0] += 2
    assert watch.stuck()
    clock[0] += 1000
    assert not watch.stuck()  # only once


def test_a_log_that_grows_or_ends_elsewhere_is_not_stuck(
    tmp_path: Path, clock: list[float]
) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"reboot: machine restart\r\n")
    watch = machine._SilenceAfterRestart(log)
    watch.stuck()
    clock[0] += machine.SILENT_AFTER_RESTART + 1
    log.write_bytes(log.read_bytes() + b"EFI stub: Loaded initrd\r\n")
    assert not watch.stuck()  # it grew: the firmware got on
    clock[0] += machine.SILENT_AFTER_RESTART + 1
    assert not watch.stuck()  # silent now, but not after a restart message


def test_reboot_watch_power_cycles_the_guest_once(
    tmp_path: Path,
    clock: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"reboot: machine restart\r\n")
    cycles: list[str] = []
    vm = SimpleNamespace(name="vm1", serial_log=log, power_cycle=lambda: cycles.append("vm1"))
    watch = machine.RebootWatch(vm)  # type: ignore[arg-type]
    watch.poll()
    assert cycles == [] and watch.power_cycles == 0
    for _ in range(3):
        clock[0] += machine.SILENT_AFTER_RESTART + 1
        watch.poll()
    assert cycles == ["vm1"] and watch.power_cycles == 1
    assert "vm1 stayed silent" in capsys.readouterr().err


def test_power_cycle_starts_a_new_qemu_on_the_same_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, object]] = []
    folder = SimpleNamespace(name="vm1")
    old = SimpleNamespace(vm=folder, state=SimpleNamespace(ssh_port=2222))
    new = SimpleNamespace(vm=folder, state=SimpleNamespace(ssh_port=3333))
    monkeypatch.setattr(runner, "stop", lambda vm, hard: calls.append(("stop", (vm, hard))))

    def start(options: runner.RunOptions, root: Path) -> object:
        calls.append(("start", (options.image, options.name, options.memory_mib, root)))
        return new

    monkeypatch.setattr(runner, "start", start)
    options = runner.RunOptions(image=tmp_path / "img", name="vm1", memory_mib=1024)
    vm = machine.KeelVM(old, options, tmp_path)  # type: ignore[arg-type]
    vm.power_cycle()
    # The old QEMU is ended hard, the new one reuses the folder (no image: its disk).
    assert calls == [("stop", (folder, True)), ("start", (None, "vm1", 1024, tmp_path))]
    assert vm.ssh_port == 3333


def test_power_cycle_needs_the_start_options(tmp_path: Path) -> None:
    vm = machine.KeelVM(SimpleNamespace(vm=SimpleNamespace(name="vm1")))  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="cannot restart"):
        vm.power_cycle()


def test_silence_after_the_firmware_hand_over_is_reported(
    tmp_path: Path, clock: list[float]
) -> None:
    # A watchdog reset prints no restart message: the firmware starts again after the
    # panic, and the hang (CI, 2026-12-06) came after its hand-over to the boot loader.
    log = tmp_path / "serial.log"
    log.write_bytes(
        b"[   38.6] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\r\n"
        b'BdsDxe: loading Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x1,0x0)\r\n'
        b'BdsDxe: starting Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x1,0x0)\r\n'
    )
    watch = machine._SilenceAfterRestart(log)
    assert not watch.stuck()
    clock[0] += machine.SILENT_AFTER_RESTART + 1
    assert watch.stuck()


def test_an_empty_log_is_not_stuck(tmp_path: Path, clock: list[float]) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    watch = machine._SilenceAfterRestart(log)
    watch.stuck()
    clock[0] += machine.SILENT_AFTER_RESTART + 1
    assert not watch.stuck()
