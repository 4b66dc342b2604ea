"""The VM's character devices: the serial log, the live serial console, the debug shell."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import sys
import termios
import threading
import time
import tty
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError

ESCAPE = b"\x1d"  # Ctrl-], like telnet: leaves `keel console` without touching the guest


def tail(log: Path, lines: int = 50) -> str:
    try:
        text = log.read_bytes().decode(errors="replace")
    except OSError:
        return "(no serial log)"
    # Firmware and kernels emit \r and terminal escapes; keep the text readable.
    text = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]", "", text).replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


def follow(log: Path, stop: threading.Event, out: int | None = None) -> threading.Thread:
    """Copy new bytes of the serial log to a file descriptor (stdout) until stop is set.

    Reading the log QEMU writes (instead of connecting to the console socket) leaves the
    socket free for `keel console` and shows exactly what the log keeps."""
    fd = sys.stdout.fileno() if out is None else out

    def pump() -> None:
        while not log.exists() and not stop.is_set():
            time.sleep(0.1)
        with contextlib.suppress(OSError), log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            while True:
                chunk = f.read(65536)
                if chunk:
                    os.write(fd, chunk)
                elif stop.is_set():
                    return
                else:
                    time.sleep(0.1)

    thread = threading.Thread(target=pump, name="serial-follow", daemon=True)
    thread.start()
    return thread


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        raise KeelError(
            f"cannot connect to {path}: {e.strerror}", hint="is the VM running?"
        ) from None
    return sock


def attach(path: Path) -> None:
    """Interactive console on a chardev socket; Ctrl-] detaches.

    No keystroke is lost, not even one typed before keel started: it waits in the
    terminal's input queue and is sent once attached. So raw mode is set with TCSANOW,
    not tty.setraw's default TCSAFLUSH, which would throw that queue away (issue 19).
    Keys typed while the terminal was still cooked were echoed by it, and a carriage
    return among them arrives as a newline."""
    sock = _connect(path)
    try:
        stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        with _sigterm_unwinds():
            try:
                if saved is not None:
                    tty.setraw(stdin, termios.TCSANOW)
                # After raw mode, so nothing typed after the banner is echoed locally;
                # raw output needs the \r.
                banner = "Connected to the serial console; press Ctrl-] to leave."
                end = "\r\n" if saved is not None else "\n"
                print(banner, end=end, file=sys.stderr, flush=True)
                _relay(sock, stdin, stdout)
            finally:
                if saved is not None:
                    # The terminal may be gone (hung up): nothing left to give back.
                    with contextlib.suppress(termios.error):
                        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    finally:
        sock.close()
    print("\nDetached from the console.", file=sys.stderr)


def _relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    """Copy the socket to stdout and stdin to the socket until the socket closes, stdin
    ends or Ctrl-] is typed. What was typed before the Ctrl-] still goes to the guest."""
    readers: list[int | socket.socket] = [sock, stdin]
    while True:
        ready, _, _ = select.select(readers, [], [])
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            _write_all(stdout, data)
        if stdin in ready:
            data = os.read(stdin, 1024)
            typed, escape, _ = data.partition(ESCAPE)
            if typed:
                sock.sendall(typed)
            if not data or escape:
                return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while attached, so a `kill` unwinds through the code
    that gives the terminal back instead of leaving it raw. (Signal handlers can only be
    set in the main thread; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@dataclass(frozen=True)
class ShellResult:
    exit_status: int
    output: str


class DebugShell:
    """A command runner over the guest's debug root shell on /dev/hvc0.

    The shell is a terminal that echoes input and may print prompts, so the output of
    a command is cut out between two markers. Each marker is spelled in two quoted
    halves in the command line, so the echoed input never matches the marker itself."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _session(self) -> Iterator[socket.socket]:
        sock = _connect(self.path)
        try:
            yield sock
        finally:
            sock.close()

    def _read_until(
        self, sock: socket.socket, pattern: re.Pattern[str], deadline: float
    ) -> re.Match[str] | None:
        received = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            chunk = sock.recv(65536)
            if not chunk:
                return None
            received += chunk
            match = pattern.search(received.decode(errors="replace"))
            if match:
                return match
        return None

    def run(self, command: str, timeout: float = 60.0) -> ShellResult:
        token = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + timeout
        with self._session() as sock:
            # Echo off first, and wait until the shell confirms it: otherwise the
            # terminal echoes the command text into the output we cut out. The leading
            # newline ends any half-typed line someone left behind.
            sock.sendall(f"\nstty -echo; echo 'KEEL-''READY-{token}'\n".encode())
            # Not anchored at line starts: a shell prompt may precede the marker.
            ready = re.compile(rf"KEEL-READY-{token}\r?\n")
            if self._read_until(sock, ready, deadline):
                script = (
                    # A subshell: `exit` in the command must not end the debug shell.
                    f"echo 'KEEL-''BEGIN-{token}'; ( {command}\n) 2>&1 </dev/null; "
                    f'echo "KEEL-""END-{token}-$?"\n'
                )
                sock.sendall(script.encode())
                result = re.compile(
                    rf"KEEL-BEGIN-{token}\r?\n(.*?)KEEL-END-{token}-(\d+)\r?\n", re.S
                )
                match = self._read_until(sock, result, deadline)
                if match:
                    output = match.group(1).replace("\r\n", "\n")
                    return ShellResult(int(match.group(2)), output)
        raise KeelError(
            f"no answer from the debug shell on {self.path} within {timeout:.0f}s",
            hint="only an image built with `debug_shell: true` has the debug shell "
            "(a root shell on /dev/hvc0 when fw_cfg opt/org.keel/debug-shell is present)",
        )
