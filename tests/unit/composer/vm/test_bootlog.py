"""The SSH wait's sign that sshd started, read from the serial console log, and the
wait itself: no login attempt before the sign, one with the long timeout after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.vm import ssh
from composer.vm.bootlog import SshdStartWatch

COLOURED = b"[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mssh.service\x1b[0m - OpenBSD Secure Shell server.\r\n"  # noqa: E501


def test_the_coloured_status_line_is_the_sign(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    watch = SshdStartWatch(log)
    assert not watch.started()
    log.write_bytes(b"         Starting \x1b[0;1;39mssh.service\x1b[0m - OpenBSD...\r\n")
    assert not watch.started()
    with log.open("ab") as f:
        f.write(COLOURED)
    assert watch.started()


def test_a_line_written_in_two_pieces_is_found(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"x" * 5000)
    watch = SshdStartWatch(log)
    with log.open("ab") as f:
        f.write(b"y" * 3000 + COLOURED[:30])
    assert not watch.started()
    with log.open("ab") as f:
        f.write(COLOURED[30:])
    assert watch.started()


def test_what_the_log_held_before_the_watch_does_not_count(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(COLOURED + b"reboot: Power down\r\n")  # the VM's previous run
    watch = SshdStartWatch(log)
    assert not watch.started()


def test_a_missing_log_is_no_sign(tmp_path: Path) -> None:
    assert not SshdStartWatch(tmp_path / "absent.log").started()


def test_the_wait_tries_a_login_only_after_the_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[float] = []
    polls = iter([False, False, False, True, True])

    def fake_login(port: int, key: Path, timeout: float) -> str | None:
        attempts.append(timeout)
        return None

    monkeypatch.setattr(ssh, "try_login", fake_login)
    monkeypatch.setattr(ssh.time, "sleep", lambda seconds: None)
    ready = ssh.wait_until_ready(
        1, Path("key"), deadline=ssh.time.monotonic() + 60, still_running=lambda: True,
        report=lambda line: None, sshd_started=lambda: next(polls),
    )  # fmt: skip
    assert ready
    assert attempts == [ssh.FIRST_SIGNED_TIMEOUT]


def test_after_the_sign_attempts_begin_short_and_double(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[float] = []

    def fake_login(port: int, key: Path, timeout: float) -> str | None:
        attempts.append(timeout)
        return None if len(attempts) == 4 else "waiting for the SSH banner"

    monkeypatch.setattr(ssh, "try_login", fake_login)
    monkeypatch.setattr(ssh.time, "sleep", lambda seconds: None)
    ready = ssh.wait_until_ready(
        1, Path("key"), deadline=ssh.time.monotonic() + 60, still_running=lambda: True,
        report=lambda line: None, sshd_started=lambda: True,
    )  # fmt: skip
    assert ready
    assert attempts == [6.0, 12.0, 24.0, ssh.LOGIN_TIMEOUT]


def test_without_a_sign_the_wait_still_logs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 5))
    attempts: list[float] = []

    def fake_login(port: int, key: Path, timeout: float) -> str | None:
        attempts.append(timeout)
        return None if len(attempts) == 3 else "waiting for the SSH banner"

    monkeypatch.setattr(ssh, "try_login", fake_login)
    monkeypatch.setattr(ssh.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(ssh.time, "sleep", lambda seconds: None)
    ready = ssh.wait_until_ready(
        1, Path("key"), deadline=1000, still_running=lambda: True,
        report=lambda line: None, sshd_started=lambda: False,
    )  # fmt: skip
    assert ready
    assert attempts == [3.0, 4.0, 5.0]
