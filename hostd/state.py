"""The update state machine, persisted on var so it survives reboots and power loss.

One JSON file, replaced atomically (temporary file, fsync, rename, fsync of the
folder): after a power cut it holds either the old or the new state, never half of
one. Every transition is logged to the journal and appended to history.jsonl, which
`keelctl history` shows.

Phases and what a power cut in each leaves behind:
  idle          nothing in flight
  downloading   a partial file under /var/lib/keel/update; retry downloads again
  writing-slot  the inactive slot half written, but its loader entries were removed
                before the first byte, so nothing boots it; retry rewrites it
  installing    kernel/initrd/entry being written under temporary names; the entry is
                renamed in last, so a half-installed version is never booted
  installed     a new version has an entry with a fresh tries counter; the next boot
                tries it (and falls back by itself if it fails)
  trial         booted into the new version, health gate not yet passed
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("keel.hostd")

STATE_DIR = Path("/var/lib/keel/update")

PHASES = ("idle", "downloading", "writing-slot", "installing", "installed", "trial")
# Which phase may follow which. Every in-flight phase may fall back to idle (refused,
# failed, interrupted); a new update may replace an installed-but-not-booted one.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "idle": ("idle", "downloading", "writing-slot"),
    "downloading": ("idle", "writing-slot"),
    "writing-slot": ("idle", "installing"),
    "installing": ("idle", "installed"),
    "installed": ("idle", "trial", "downloading", "writing-slot"),
    "trial": ("idle",),
}


class TransitionError(Exception):
    pass


@dataclass(frozen=True)
class Result:
    """The outcome of the last update attempt, as `keelctl status` reports it."""

    result: str  # succeeded | failed | refused | rolled-back | interrupted
    version: str
    reason: str
    at: float


@dataclass(frozen=True)
class UpdateState:
    phase: str = "idle"
    # The version being installed (or installed and waiting for its boot) and its slot.
    target_version: str = ""
    target_slot: str = ""
    # The version that was booted when the update started: where a rollback lands.
    from_version: str = ""
    progress: dict[str, int] = field(default_factory=dict)
    last_result: Result | None = None
    # version -> why; hostd never offers these again.
    failed_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpdateState:
        last = data.get("last_result")
        return cls(
            phase=data.get("phase", "idle"),
            target_version=data.get("target_version", ""),
            target_slot=data.get("target_slot", ""),
            from_version=data.get("from_version", ""),
            progress=dict(data.get("progress", {})),
            last_result=Result(**last) if last else None,
            failed_versions=dict(data.get("failed_versions", {})),
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Replace path with data so that a power cut leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    """The state file and the history log in one folder (tests pass a tmp dir)."""

    def __init__(self, folder: Path = STATE_DIR) -> None:
        self.folder = folder
        self.path = folder / "state.json"
        self.history_path = folder / "history.jsonl"

    def load(self) -> UpdateState:
        try:
            return UpdateState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return UpdateState()
        except (ValueError, TypeError) as error:
            # A state file we cannot read must not stop the host from updating: start
            # over (the slots and entries on disk are the truth; state only annotates).
            log.error("update state %s unreadable (%s); starting from idle", self.path, error)
            return UpdateState()

    def save(self, state: UpdateState) -> None:
        write_atomically(self.path, json.dumps(state.to_json(), indent=2).encode() + b"\n")

    def transition(self, state: UpdateState, phase: str, **changes: Any) -> UpdateState:
        """Move to phase (checked against TRANSITIONS), persist, log, record history."""
        if phase not in TRANSITIONS.get(state.phase, ()):
            raise TransitionError(f"update state cannot go from {state.phase} to {phase}")
        new = replace(state, phase=phase, **changes)
        self.save(new)
        detail = f" ({new.target_version} -> slot {new.target_slot})" if new.target_version else ""
        log.info("update state: %s -> %s%s", state.phase, phase, detail)
        self.record("transition", {"from": state.phase, "to": phase, "version": new.target_version})
        return new

    def update(self, state: UpdateState, **changes: Any) -> UpdateState:
        """Change fields without a phase change (progress, results)."""
        new = replace(state, **changes)
        self.save(new)
        return new

    def finish(
        self, state: UpdateState, result: str, version: str, reason: str, **changes: Any
    ) -> UpdateState:
        """Back to idle with a recorded result (and journal line)."""
        outcome = Result(result, version, reason, time.time())
        level = logging.INFO if result == "succeeded" else logging.WARNING
        log.log(level, "update %s %s: %s", version or "-", result, reason)
        self.record(result, {"version": version, "reason": reason})
        return self.transition(
            state,
            "idle",
            target_version="",
            target_slot="",
            progress={},
            last_result=outcome,
            **changes,
        )

    def record(self, event: str, detail: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": time.time(), "event": event, **detail})
        with self.history_path.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines[-limit:]:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a power loss
        return events
