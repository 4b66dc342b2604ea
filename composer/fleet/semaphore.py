"""FleetLock semaphores in etcd, laid out as airlock lays them out.

One key per group,

    com.coreos.airlock/groups/<group, URL query-escaped>/v1/semaphore

holding the JSON {"total_slots": N, "holders": [ids, sorted]}. Every change reads
the key and its version, changes the semaphore, and writes it back in a transaction
that compares the version: if another server (Keel's or airlock's) changed it in
between, nothing is written and the change is tried again on the new value. A key
that does not exist is created with the group's slots; an existing key keeps the
total_slots it has (as airlock does): state lives in etcd, not in any server's flags.

Locks are recursive: a holder that asks again holds it still, and releasing a slot
that is not held succeeds."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote_plus, unquote_plus

from composer.fleet.etcd import KeyValue

PREFIX = "com.coreos.airlock/groups/"
SUFFIX = "/v1/semaphore"
# Tries of one change while other servers keep changing the same key.
ATTEMPTS = 20


class SemaphoreFull(Exception):
    pass


class SemaphoreError(Exception):
    pass


class Store(Protocol):
    """What the semaphore needs of etcd (composer/fleet/etcd.py, or a fake in tests)."""

    def get(self, key: bytes) -> KeyValue | None: ...

    def get_prefix(self, prefix: bytes) -> list[KeyValue]: ...

    def put_if_version(self, key: bytes, version: int, value: bytes) -> bool: ...


def key(group: str) -> bytes:
    # Go's url.QueryEscape, as airlock escapes the group; valid groups
    # ([a-zA-Z0-9.-]) come out unchanged.
    return (PREFIX + quote_plus(group, safe="-_.~") + SUFFIX).encode()


def group_of(etcd_key: bytes) -> str | None:
    text = etcd_key.decode(errors="replace")
    if not (text.startswith(PREFIX) and text.endswith(SUFFIX)):
        return None
    return unquote_plus(text[len(PREFIX) : -len(SUFFIX)])


@dataclass
class Semaphore:
    total_slots: int
    holders: list[str] = field(default_factory=list)

    def lock(self, holder: str) -> bool:
        """Take a slot for holder; False if it held one already. SemaphoreFull if none
        is free."""
        at = bisect.bisect_left(self.holders, holder)
        if at < len(self.holders) and self.holders[at] == holder:
            return False
        if len(self.holders) >= self.total_slots:
            raise SemaphoreFull(f"all {self.total_slots} semaphore slots currently locked")
        self.holders.insert(at, holder)
        return True

    def unlock(self, holder: str) -> bool:
        """Give holder's slot back; whether it held one."""
        if holder in self.holders:
            self.holders.remove(holder)
            return True
        return False

    def to_json(self) -> bytes:
        return json.dumps({"total_slots": self.total_slots, "holders": self.holders}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Semaphore:
        try:
            parsed = json.loads(data)
            total, holders = parsed["total_slots"], parsed.get("holders") or []
        except (ValueError, KeyError, TypeError):
            raise SemaphoreError(f"the semaphore in etcd is not airlock's JSON: {data!r}") from None
        if not isinstance(total, int) or not all(isinstance(h, str) for h in holders):
            raise SemaphoreError(f"the semaphore in etcd is not airlock's JSON: {data!r}")
        return cls(total, sorted(holders))


class Semaphores:
    """The groups' semaphores; slots(group) is the size a new group's key gets."""

    def __init__(self, store: Store, default_slots: int = 1, groups: dict[str, int] | None = None):
        self.store = store
        self.default_slots = default_slots
        self.groups = dict(groups or {})

    def slots(self, group: str) -> int:
        return self.groups.get(group, self.default_slots)

    def read(self, group: str) -> tuple[Semaphore, int]:
        """The group's semaphore and its key's version (0: not in etcd yet)."""
        found = self.store.get(key(group))
        if found is None or found.version == 0:
            return Semaphore(self.slots(group)), 0
        return Semaphore.from_json(found.value), found.version

    def _change(self, group: str, change: str, holder: str) -> tuple[Semaphore, bool]:
        for _ in range(ATTEMPTS):
            semaphore, version = self.read(group)
            changed = semaphore.lock(holder) if change == "lock" else semaphore.unlock(holder)
            if not changed and version != 0:
                return semaphore, False
            if self.store.put_if_version(key(group), version, semaphore.to_json()):
                return semaphore, changed
        raise SemaphoreError(
            f"the semaphore of group {group} kept changing under {ATTEMPTS} attempts; try again"
        )

    def lock(self, group: str, holder: str) -> tuple[Semaphore, bool]:
        """Take a slot (recursive); the semaphore after, and whether holder is new."""
        return self._change(group, "lock", holder)

    def unlock(self, group: str, holder: str) -> tuple[Semaphore, bool]:
        """Give a slot back if held; the semaphore after, and whether holder held one."""
        return self._change(group, "unlock", holder)

    def all(self) -> dict[str, Semaphore]:
        found = {}
        for kv in self.store.get_prefix(PREFIX.encode()):
            group = group_of(kv.key)
            if group is not None:
                found[group] = Semaphore.from_json(kv.value)
        return found
