"""The harness's watch for a guest that went silent in the firmware after a reboot."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from composer.testing import machine


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


def test_reboot_watch_resets_the_guest_once_through_qmp(
    tmp_path: Path,
    clock: list[float],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"reboot: machine restart\r\n")
    sent: list[tuple[Path, str]] = []
    monkeypatch.setattr(machine.qmp, "command", lambda sock, cmd: sent.append((sock, cmd)))
    vm = SimpleNamespace(name="vm1", serial_log=log, vm_dir=SimpleNamespace(qmp_socket=tmp_path))
    watch = machine.RebootWatch(vm)  # type: ignore[arg-type]
    watch.poll()
    assert sent == [] and watch.resets == 0
    for _ in range(3):
        clock[0] += machine.SILENT_AFTER_RESTART + 1
        watch.poll()
    assert sent == [(tmp_path, "system_reset")] and watch.resets == 1
    assert "vm1 stayed silent" in capsys.readouterr().err
