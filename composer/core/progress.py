"""Progress on stderr: one line when a step starts, one when it ends with its elapsed time.

Steps are reported to a person on stderr; with --json the final result goes to stdout
and stderr stays quiet apart from errors and warnings, so scripts get clean output."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Progress:
    quiet: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, where: object, message: str) -> None:
        """A problem the build goes on despite, as "FILE:LINE: warning: ...". Shown even
        when quiet: like an error, it asks the person to change something."""
        print(f"{where}: warning: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"==> {name}")
        start = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - start
            self.timings[name] = elapsed
            self.say(f"    {name}: {elapsed:.1f}s (total {time.monotonic() - self._started:.1f}s)")

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def transfer(self, label: str, total: int) -> ByteProgress:
        """Progress of one long copy or read of total bytes, within a step."""
        return ByteProgress(label, total, quiet=self.quiet)


@dataclass
class ByteProgress:
    """How far a long copy or read is: a line on stderr at most every few seconds
    (percent, bytes, rate), and one when done."""

    label: str
    total: int
    quiet: bool = False
    every: float = 5.0
    _started: float = field(default_factory=time.monotonic)
    _shown: float = field(default_factory=time.monotonic)

    def _line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        percent = done * 100 // max(self.total, 1)
        return (
            f"    {self.label}: {percent}% ({done / 2**20:.0f} of {self.total / 2**20:.0f} MiB, "
            f"{done / 2**20 / elapsed:.0f} MiB/s)"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.quiet and now - self._shown >= self.every:
            self._shown = now
            print(self._line(done), file=sys.stderr, flush=True)

    def finish(self, done: int) -> float:
        """Show the last line; the seconds the whole copy took."""
        if not self.quiet:
            print(self._line(done), file=sys.stderr, flush=True)
        return time.monotonic() - self._started
