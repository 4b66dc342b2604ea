"""The update state machine, persisted on var so it survives reboots and power loss.

One JSON file, replaced atomically (hostd/files.py: temporary file, fsync, rename,
fsync of the folder): after a power cut it holds either the old or the new state,
never half of one. Every transition is logged to the journal and appended to
history.jsonl, which `keelctl history` shows.

Phases and what a power cut in each leaves behind:
  idle          nothing in flight
  downloading   a partial file in hostd's private folder (staging/ beside this
                file), which the next attempt removes before it downloads again
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
from enum import StrEnum
from pathlib import Path
from typing import Any

from hostd.files import write_atomically

log = logging.getLogger("keel.hostd")

STATE_DIR = Path("/var/lib/keel/update")


class Phase(StrEnum):
    """The values are what state.json and history.jsonl hold: renaming one would strand
    hosts whose state file has the old word."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    WRITING_SLOT = "writing-slot"
    INSTALLING = "installing"
    INSTALLED = "installed"
    TRIAL = "trial"


# Which phase may follow which. Every in-flight phase may fall back to idle (refused,
# failed, interrupted); a new update may replace an installed-but-not-booted one.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.IDLE, Phase.DOWNLOADING, Phase.WRITING_SLOT}),
    Phase.DOWNLOADING: frozenset({Phase.IDLE, Phase.WRITING_SLOT}),
    Phase.WRITING_SLOT: frozenset({Phase.IDLE, Phase.INSTALLING}),
    Phase.INSTALLING: frozenset({Phase.IDLE, Phase.INSTALLED}),
    Phase.INSTALLED: frozenset({Phase.IDLE, Phase.TRIAL, Phase.DOWNLOADING, Phase.WRITING_SLOT}),
    Phase.TRIAL: frozenset({Phase.IDLE}),
}
# Phases an update only passes through while hostd works on it: found after a boot,
# they mean it was cut short.
IN_FLIGHT = frozenset({Phase.DOWNLOADING, Phase.WRITING_SLOT, Phase.INSTALLING})


class TransitionError(Exception):
    pass


@dataclass(frozen=True)
class Result:
    """The outcome of the last update attempt, as `keelctl status` reports it."""

    result: str  # succeeded | failed | refused | rolled-back | interrupted | halted
    version: str
    reason: str
    at: float


@dataclass(frozen=True)
class UpdateState:
    phase: Phase = Phase.IDLE
    # The version being installed (or installed and waiting for its boot) and its slot.
    target_version: str = ""
    target_slot: str = ""
    # The version that was booted when the update started: where a rollback lands.
    from_version: str = ""
    progress: dict[str, int] = field(default_factory=dict)
    last_result: Result | None = None
    # version -> why; hostd never offers these again.
    failed_versions: dict[str, str] = field(default_factory=dict)
    # How the last installed version came: mode (delta, full, local bundle), bytes
    # downloaded and the full bundle's size.
    transfer: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpdateState:
        last = data.get("last_result")
        return cls(
            phase=Phase(data.get("phase", Phase.IDLE)),
            target_version=data.get("target_version", ""),
            target_slot=data.get("target_slot", ""),
            from_version=data.get("from_version", ""),
            progress=dict(data.get("progress", {})),
            last_result=Result(**last) if last else None,
            failed_versions=dict(data.get("failed_versions", {})),
            transfer=dict(data.get("transfer", {})),
        )


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

    def transition(self, state: UpdateState, phase: Phase, **changes: Any) -> UpdateState:
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
            Phase.IDLE,
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
