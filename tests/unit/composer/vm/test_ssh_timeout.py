"""run_command's own deadline: paramiko's exec and exit-status waits have none."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paramiko
import pytest

from composer.vm import ssh


class HangingClient:
    """Like a paramiko client whose guest rebooted under the session: the exec reply
    never comes, until the client is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def exec_command(self, command: str, timeout: float) -> None:
        self.closed.wait()
        raise paramiko.SSHException("SSH session not active")

    def close(self) -> None:
        self.closed.set()

    def get_transport(self) -> HangingClient:
        return self

    def set_keepalive(self, interval: int) -> None:
        self.keepalive = interval


def test_a_command_whose_guest_went_away_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    client = HangingClient()
    monkeypatch.setattr(ssh, "connect", lambda port, key: client)
    monkeypatch.setattr(ssh, "GUARD_MARGIN", 0.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer to `cat /x` within 0s"):
        ssh.run_command(2222, Path("/nonexistent"), "cat /x", timeout=0.3)
    assert time.monotonic() - started < 5
    assert client.closed.is_set()


def test_a_command_probes_its_guest_while_it_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keepalive lets a reset from a rebooted guest end the wait early."""
    client = HangingClient()
    monkeypatch.setattr(ssh, "connect", lambda port, key: client)
    monkeypatch.setattr(ssh, "GUARD_MARGIN", 0.0)
    with pytest.raises(TimeoutError):
        ssh.run_command(2222, Path("/nonexistent"), "true", timeout=0.1)
    assert 0 < client.keepalive <= 30
