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
