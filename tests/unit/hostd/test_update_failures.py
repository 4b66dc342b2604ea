"""A slot write that fails (issue 12, item 2) ends the update: zstd is stopped, the
update lock is free again and the state records why, within a bounded time."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hostd import updater as updater_module
from hostd.state import Phase
from hostd.updater import Refused
from tests.unit.hostd.hosts import Host, bounded, entries, leftovers, lock_is_free

MIB = 1024 * 1024


class RecordedPopen(subprocess.Popen[bytes]):
    started: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "-dc" in self.args:  # type: ignore[operator]
            self.started.append(self)


def fail(monkeypatch: pytest.MonkeyPatch, host: Host, how: str) -> None:
    """Make the write of slot b fail: its disk (EIO, ENOSPC after 1 MiB), or saving the
    progress (/var full) while the slot is written."""
    if how == "progress":

        def progress(self: updater_module.Progress, done: int) -> None:
            if self.state.phase == Phase.WRITING_SLOT:
                raise OSError(errno.ENOSPC, "No space left on device (saving progress)")

        monkeypatch.setattr(updater_module.Progress, "__call__", progress)
        return
    code = errno.EIO if how == "EIO" else errno.ENOSPC
    real = os.write
    target = str((host.root / "dev/root-b").resolve())
    written = 0

    def write(fd: int, data: Any) -> int:
        nonlocal written
        if os.readlink(f"/proc/self/fd/{fd}") == target:
            if written + len(data) > MIB:
                raise OSError(code, os.strerror(code))
            written += len(data)
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("how", ["EIO", "ENOSPC", "progress"])
def test_a_failing_slot_write_ends_the_update_with_a_result(
    host: Host, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Random (incompressible) and larger than both of zstd's pipes.
    host.publish("2.0.0", root_size=3 * MIB)
    started: list[subprocess.Popen[bytes]] = []
    monkeypatch.setattr(RecordedPopen, "started", started)
    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    fail(monkeypatch, host, how)
    with pytest.raises(Refused, match=r"writing slot b failed: .*(No space left|Input/output)"):
        bounded(host.updater.update, 30)
    assert [p.poll() is not None for p in started] == [True]
    assert lock_is_free(host.updater)
    status = bounded(host.updater.status, 5)
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "failed"
    assert status["last_result"]["reason"].startswith("writing slot b failed")
    assert entries(host) == ["keel-1.0.0-a.conf"]  # slot b stays unhooked
    assert leftovers(host) == []


def test_an_unforeseen_error_still_ends_with_a_result(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.publish("2.0.0")

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise KeyError("a bug")

    monkeypatch.setattr(updater_module.slots, "read_back_sha256", broken)
    with pytest.raises(Refused, match="KeyError"):
        host.updater.update()
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "failed"
    assert "KeyError" in status["last_result"]["reason"]
