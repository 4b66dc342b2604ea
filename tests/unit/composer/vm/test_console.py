"""The serial console client (`keel console`) and the debug-shell protocol, against a real
shell behind a pseudo-terminal."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from composer.vm import console
from composer.vm.console import ESCAPE, DebugShell, tail


class FakeConsole:
    """A UNIX socket that, like QEMU's chardev, leads to a shell on a tty (with echo on,
    as on /dev/hvc0 or ttyS0), one client at a time. It keeps every byte the clients
    send, for tests to wait on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._received = bytearray()
        self._arrived = threading.Condition()
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(path))
        self._server.listen()
        self._controller, terminal = pty.openpty()
        self._shell = subprocess.Popen(
            ["sh", "-i"], stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
        )
        os.close(terminal)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def received_until(self, wanted: bytes, timeout: float) -> bytes:
        """Everything clients sent so far, once it holds `wanted` or after `timeout`."""
        with self._arrived:
            self._arrived.wait_for(lambda: wanted in self._received, timeout)
            return bytes(self._received)

    def _serve(self) -> None:
        while not self._done.is_set():
            ready, _, _ = select.select([self._server], [], [], 0.2)
            if not ready:
                continue
            conn, _ = self._server.accept()
            with conn:
                while not self._done.is_set():
                    watched: list[int] = [conn.fileno(), self._controller]
                    r, _, _ = select.select(watched, [], [], 0.2)
                    if conn.fileno() in r:
                        try:
                            data = conn.recv(4096)
                        except ConnectionResetError:  # it left with output unread
                            break
                        if not data:
                            break
                        with self._arrived:
                            self._received += data
                            self._arrived.notify_all()
                        os.write(self._controller, data)
                    if self._controller in r:
                        output = os.read(self._controller, 4096)
                        try:
                            conn.sendall(output)
                        except (BrokenPipeError, ConnectionResetError):
                            # The client left while the shell still printed (its
                            # prompt): like QEMU's chardev, drop it and wait for the next.
                            break

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._shell.kill()
        self._shell.wait()
        os.close(self._controller)
        self._server.close()


@pytest.fixture
def fake_console(tmp_path: Path) -> Iterator[FakeConsole]:
    server = FakeConsole(tmp_path / "console.sock")
    yield server
    server.close()


@pytest.fixture
def shell_socket(fake_console: FakeConsole) -> Path:
    return fake_console.path


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


# `keel console` minus the VM lookup: attach() in a process of its own, on a pty.
ATTACH = "import sys, pathlib, composer.vm.console as c; c.attach(pathlib.Path(sys.argv[1]))"


@dataclass
class Terminal:
    controller: int  # the person's side: what they type, what they see
    terminal: int  # keel's stdin, stdout and stderr
    before: list[object]  # its settings before keel started
    process: subprocess.Popen[bytes]

    def read_until(self, wanted: bytes, timeout: float) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while wanted not in seen and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.controller], [], [], left)
            if ready:
                seen += os.read(self.controller, 4096)
        return seen


@contextlib.contextmanager
def keel_console(path: Path) -> Iterator[Terminal]:
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    process = subprocess.Popen(
        [sys.executable, "-c", ATTACH, str(path)], stdin=terminal, stdout=terminal, stderr=terminal
    )
    try:
        yield Terminal(controller, terminal, before, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
        os.close(terminal)


def test_console_forwards_keys_typed_before_the_banner(fake_console: FakeConsole) -> None:
    """Issue 19: a key typed before `keel console` put the terminal in raw mode was
    thrown away (tty.setraw flushes pending input by default)."""
    with keel_console(fake_console.path) as term:
        # At once, before keel has even started Python: the terminal is still cooked.
        os.write(term.controller, b"echo early-$((6*7))\r")
        received = fake_console.received_until(b"echo early-$((6*7))", 10)
        assert b"echo early-$((6*7))" in received, received
        output = term.read_until(b"early-42", 10)  # the shell ran it, its output came back
        assert b"Ctrl-]" in output and b"early-42" in output, output
        os.write(term.controller, ESCAPE)
        assert term.process.wait(timeout=10) == 0
        assert b"Detached" in term.read_until(b"Detached", 10)
        assert termios.tcgetattr(term.terminal) == term.before


def test_console_forwards_what_precedes_ctrl_bracket(fake_console: FakeConsole) -> None:
    with keel_console(fake_console.path) as term:
        assert b"Ctrl-]" in term.read_until(b"Ctrl-]", 10)
        # Raw now: no echo, and a paste (or a fast typist) hands keel both in one read.
        assert not termios.tcgetattr(term.terminal)[3] & termios.ECHO
        os.write(term.controller, b"echo late-$((6*7))\r" + ESCAPE)
        assert term.process.wait(timeout=10) == 0
        received = fake_console.received_until(b"echo late-$((6*7))\r", 10)
        assert received.endswith(b"echo late-$((6*7))\r"), received
        assert termios.tcgetattr(term.terminal) == term.before


def test_console_gives_the_terminal_back_when_killed(fake_console: FakeConsole) -> None:
    with keel_console(fake_console.path) as term:
        assert b"Ctrl-]" in term.read_until(b"Ctrl-]", 10)
        assert not termios.tcgetattr(term.terminal)[3] & termios.ECHO
        term.process.terminate()
        assert term.process.wait(timeout=10) == 128 + signal.SIGTERM
        assert termios.tcgetattr(term.terminal) == term.before


def test_console_gives_the_terminal_back_when_it_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    guest, keel_side = socket.socketpair()
    monkeypatch.setattr(console, "_connect", lambda path: keel_side)
    stdin = os.fdopen(terminal, "rb", buffering=0, closefd=False)
    monkeypatch.setattr(sys, "stdin", stdin)
    unread, broken = os.pipe()  # a stdout nobody reads any more: writing to it fails
    os.close(unread)
    stdout = os.fdopen(broken, "wb", buffering=0)
    monkeypatch.setattr(sys, "stdout", stdout)
    lflags_while_attached: list[int] = []

    def guest_answers() -> None:
        guest.settimeout(10)
        try:
            guest.recv(16)  # keel forwarded a key, so it is attached and the terminal raw
        except TimeoutError:
            guest.shutdown(socket.SHUT_RDWR)  # the key was lost: hang up, end attach()
            return
        lflags_while_attached.append(termios.tcgetattr(terminal)[3])
        guest.sendall(b"login: ")

    thread = threading.Thread(target=guest_answers, daemon=True)
    thread.start()
    os.write(controller, b"x")
    try:
        with pytest.raises(BrokenPipeError):
            console.attach(tmp_path / "console.sock")
        thread.join(10)
        assert lflags_while_attached and not lflags_while_attached[0] & termios.ECHO
        assert termios.tcgetattr(terminal) == before
    finally:
        for f in (stdin, stdout):
            f.close()
        for fd in (controller, terminal):
            os.close(fd)
        guest.close()
        keel_side.close()
