"""Every external command goes through here, so each one is logged the same way and a
failure always reads as one error: the command, its exit code and the tail of stderr."""

from __future__ import annotations

import collections
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from composer.core.errors import KeelError

STDERR_TAIL_LINES = 25

# Set by the CLI: when false (--json, or quiet), commands are not echoed.
echo_commands = True


def _show(cmd: Sequence[str | os.PathLike[str]]) -> str:
    return shlex.join(str(c) for c in cmd)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    capture: bool = False,
    input: bytes | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    hint: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run cmd; on failure raise KeelError naming the command and the end of its stderr.

    capture: return stdout in the result instead of letting it through.
    on_stderr_line: called with each stderr line as it arrives (progress parsing); the
    lines are still kept for the error message.
    env: variables to set on top of this process's environment; None removes one.
    """
    argv = [str(c) for c in cmd]
    if echo_commands:
        print(f"  $ {_show(argv)}", file=sys.stderr, flush=True)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        for name, value in env.items():
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = value
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise KeelError(
            f"command not found: {argv[0]}",
            hint="run `keel doctor` to see which Debian package provides it",
        ) from None

    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            if on_stderr_line is not None:
                on_stderr_line(line)

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    # Not communicate(): it would read stderr too, racing the reader thread.
    if proc.stdin is not None:
        proc.stdin.write(input or b"")
        proc.stdin.close()
    stdout = proc.stdout.read() if proc.stdout is not None else b""
    proc.wait()
    reader.join()
    if check and proc.returncode != 0:
        detail = "\n".join(f"    {line}" for line in tail) or "    (no output on stderr)"
        raise KeelError(
            f"command failed with exit code {proc.returncode}: {_show(argv)}\n"
            f"  last lines of its stderr:\n{detail}",
            hint=hint,
        )
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "\n".join(tail).encode())


def output(cmd: Sequence[str | os.PathLike[str]], **kwargs: object) -> str:
    """Run cmd and return its stdout as text."""
    result = run(cmd, capture=True, **kwargs)  # type: ignore[arg-type]
    return result.stdout.decode()
