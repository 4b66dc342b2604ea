"""The debug-shell protocol, against a real shell behind a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.vm.console import DebugShell, tail


@pytest.fixture
def shell_socket(tmp_path: Path) -> Iterator[Path]:
    """A UNIX socket that, like QEMU's virtconsole chardev, leads to a shell on a tty
    (with echo on, as on /dev/hvc0)."""
    path = tmp_path / "debug.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    controller, terminal = pty.openpty()
    shell = subprocess.Popen(
        ["sh", "-i"], stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            ready, _, _ = select.select([server], [], [], 0.2)
            if not ready:
                continue
            conn, _ = server.accept()
            with conn:
                while not done.is_set():
                    watched: list[int] = [conn.fileno(), controller]
                    r, _, _ = select.select(watched, [], [], 0.2)
                    if conn.fileno() in r:
                        data = conn.recv(4096)
                        if not data:
                            break
                        os.write(controller, data)
                    if controller in r:
                        output = os.read(controller, 4096)
                        try:
                            conn.sendall(output)
                        except (BrokenPipeError, ConnectionResetError):
                            # The client left while the shell still printed (its
                            # prompt): like QEMU's chardev, drop it and wait for the next.
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    done.set()
    thread.join()
    shell.kill()
    shell.wait()
    os.close(controller)
    server.close()


def test_output_and_exit_status(shell_socket: Path) -> None:
    shell = DebugShell(shell_socket)
    result = shell.run("echo hello; echo world >&2; false")
    assert result.exit_status == 1
    assert result.output == "hello\nworld\n"
    again = shell.run("printf 'a b\\n'")
    assert (again.exit_status, again.output) == (0, "a b\n")
    assert shell.run("exit 7").exit_status == 7
    assert shell.run("echo alive").output == "alive\n"


def test_tail_strips_terminal_noise(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(
        b"\x1b[2J\x1b[=3hBdsDxe: booting\r\n" + b"".join(b"line %d\r\n" % i for i in range(80))
    )
    text = tail(log, 3)
    assert text == "line 77\nline 78\nline 79"
    assert "no serial log" in tail(tmp_path / "missing.log")
