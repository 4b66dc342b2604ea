"""Phased rollouts from static files: which signed versions this host may take now.

`keel publish --rollout 24h` writes into the target's signed custom metadata

    custom.keel.rollout = {"start": UNIX_SECONDS, "duration": SECONDS}

and each host waits for its own offset into that span before it takes the version:

    offset = first 8 bytes of sha256(OFFSET_TAG + id), as a big-endian integer h,
             mapped onto [0, duration) as h * duration // 2**64

id is the host's app-specific id (hostd/fleetlock.py), so a host's place in every
rollout is the same (the same hosts go first, every time) and nobody can pick it
without picking the machine-id. The hash is uniform, so after a fraction f of the
span about f of the fleet may take the version.

`keel publish --halt VERSION` sets custom.keel.halted = true: hosts that have not yet
rebooted into that version stop taking it, and drop it if installed but not booted.
Both facts come from the signed targets metadata, so nobody but the targets key
holder can speed a rollout up, or halt one."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

OFFSET_TAG = b"keel-rollout\0"
SPAN = 2**64


@dataclass(frozen=True)
class Rollout:
    start: int
    duration: int

    def host_offset(self, node: str) -> int:
        return offset(node, self.duration)

    def opens_at(self, node: str) -> int:
        """When this host may take the version (unix seconds)."""
        return self.start + self.host_offset(node)


def offset(node: str, duration: int) -> int:
    """This host's seconds into a rollout of duration seconds, in [0, duration)."""
    if duration <= 0:
        return 0
    digest = hashlib.sha256(OFFSET_TAG + node.encode()).digest()
    return int.from_bytes(digest[:8], "big") * duration // SPAN


def rollout_of(keel: dict[str, Any]) -> Rollout | None:
    """The rollout a target's custom.keel describes; None when it has none (or one
    hostd cannot read, which it then treats as no rollout: the target is signed)."""
    data = keel.get("rollout")
    if not isinstance(data, dict):
        return None
    start, duration = data.get("start"), data.get("duration")
    if not isinstance(start, int) or not isinstance(duration, int) or duration < 0:
        return None
    return Rollout(start, duration)


def is_halted(keel: dict[str, Any]) -> bool:
    return keel.get("halted") is True


def waiting(keel: dict[str, Any], node: str, now: float) -> int | None:
    """Seconds until this host may take the target (None: it may now)."""
    rollout = rollout_of(keel)
    if rollout is None:
        return None
    left = rollout.opens_at(node) - now
    return math.ceil(left) if left > 0 else None
