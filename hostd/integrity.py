"""The booted root's dm-verity state, as the kernel keeps it.

`dmsetup status keel-root` ends in V while every block read so far matched its hash,
and in C once one did not. A counted boot never gets there (the initrd's table
restarts the machine on the first bad block); a blessed boot reads on with an I/O
error for that block, and hostd's watch (Updater.watch_root) takes it from here."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

DEVICE = "keel-root"  # the initrd's name for the verified root (scripts/local-top/keel-verity)
VERIFIED = "verified"
CORRUPTED = "corrupted"


def root_verity(run: Callable[..., Any] = subprocess.run) -> str | None:
    """VERIFIED, CORRUPTED, or None when / is not on dm-verity (or dmsetup cannot say)."""
    try:
        result = run(
            ["dmsetup", "status", DEVICE], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = result.stdout.split() if result.returncode == 0 else []
    # <start> <length> verity <V|C>
    if len(fields) == 4 and fields[2] == "verity":
        return {"V": VERIFIED, "C": CORRUPTED}.get(fields[3])
    return None
