"""Tells from a VM's serial console log when sshd has started.

systemd prints `Started ssh.service` on the console once sshd listens (ssh.service is
Type=notify). Knowing that moment lets the SSH wait open a fresh connection then: a
connection opened earlier, while the guest's network was still down, is held by QEMU's
user network and reaches sshd only at its next retry, seconds later."""

from __future__ import annotations

import re
from pathlib import Path

# The console colours the unit name: `Started \x1b[0;1;39mssh.service\x1b[0m - ...`.
SSHD_STARTED = re.compile(rb"(?:Started|Listening on) (?:\x1b\[[0-9;]*m)?sshd?\.(?:service|socket)")
# A console line is short; keep this much of the previous read so a line split across
# two reads is still found.
OVERLAP = 256


class SshdStartWatch:
    """Reads only what the log gained since the watch began (a restarted VM appends)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.start = log.stat().st_size if log.exists() else 0
        self.read_to = self.start
        self.seen = False

    def started(self) -> bool:
        if self.seen:
            return True
        try:
            with self.log.open("rb") as f:
                f.seek(max(self.read_to - OVERLAP, self.start))
                chunk = f.read()
                self.read_to = f.tell()
        except OSError:
            return False
        self.seen = SSHD_STARTED.search(chunk) is not None
        return self.seen
