"""A host as one of a fleet: the FleetLock reboot strategy and phased rollouts, as the
updater consults them (the protocol is in fleetlock.py, the rollout math in
rollout.py). The updater asks three questions:

  may_take(candidate)       is this signed version for this host yet (not halted, and
                            this host's rollout offset has passed)?
  may_reboot(policy, v, t)  may the host reboot into v now (for fleet_lock: inside
                            the window, and with a slot from the server)?
  drop_halted(...)          an installed, not yet booted version that was halted
                            since is unhooked, so the next boot stays where it is

and the agent calls settle() on every tick, which gives the slot back in steady state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hostd import rollout
from hostd.fleetlock import FleetLock, FleetLockError, node_id
from hostd.policy import Policy, PolicyError
from hostd.state import Phase, UpdateState
from hostd.tufclient import RepositoryRefused

if TYPE_CHECKING:
    from pathlib import Path

    from hostd.tufclient import Candidate, Repository
    from hostd.updater import Updater

log = logging.getLogger("keel.hostd")


class Coordinator:
    def __init__(
        self,
        state_dir: Path,
        node: Callable[[], str] = node_id,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.wall_clock = wall_clock
        self.lock = FleetLock(state_dir, node=node)
        # Versions the last look at the repository held back: version -> why.
        self.held_back: dict[str, str] = {}

    # --- phased rollout -------------------------------------------------------------

    def may_take(self, candidate: Candidate) -> bool:
        keel = candidate.keel
        if rollout.is_halted(keel):
            self.held_back[candidate.version] = "halted by the publisher"
            return False
        plan = rollout.rollout_of(keel)
        if plan is None:
            return True
        try:
            opens = plan.opens_at(self.node())
        except FleetLockError as error:
            # No id, no place in the rollout: wait for its end, like the last host.
            log.warning(
                "rollout of %s: %s; waiting for the whole rollout", candidate.version, error
            )
            opens = plan.start + plan.duration
        now = self.wall_clock()
        if now < opens:
            when = datetime.fromtimestamp(opens).strftime("%Y-%m-%d %H:%M:%S")
            self.held_back[candidate.version] = f"rollout reaches this host at {when}"
            return False
        self.held_back.pop(candidate.version, None)
        return True

    def drop_halted(self, updater: Updater, state: UpdateState, repo: Repository) -> UpdateState:
        """Unhook an installed, not yet booted version the signed metadata now halts."""
        if state.phase != Phase.INSTALLED:
            return state
        name, architecture = updater._image(updater.policy())
        halted = any(
            c.version == state.target_version and rollout.is_halted(c.keel)
            for c in repo.candidates(name, architecture)
        )
        if not halted:
            return state
        removed = updater.esp.remove_slot_entries(state.target_slot)
        log.warning("%s was halted by the publisher; unhooked %s", state.target_version, removed)
        return updater.store.finish(
            state,
            "halted",
            state.target_version,
            f"{state.target_version} was halted by the publisher before this host booted it; "
            f"slot {state.target_slot} is no longer booted",
        )

    def still_wanted(self, updater: Updater, state: UpdateState) -> bool:
        """Just before a scheduled reboot: one more look at the signed metadata, so a
        version halted since the last check is dropped instead of booted. If the
        repository cannot be reached the reboot goes ahead: the version was verified
        when it was installed, and a halt is only as fast as hosts can hear of it."""
        try:
            dropped = self.drop_halted(updater, state, updater._repository())
        except (RepositoryRefused, PolicyError) as error:
            log.warning("before rebooting: the repository is unreachable (%s)", error)
            return True
        return dropped.phase == Phase.INSTALLED

    # --- reboot coordination --------------------------------------------------------

    def may_reboot(self, policy: Policy, version: str, now: datetime) -> bool:
        if policy.reboot != "fleet_lock":
            return policy.may_reboot(now)
        if not policy.window.contains(now):
            return False  # the slot is asked for only inside the window
        return self.lock.acquire(policy.fleet_lock, version)

    def settle(self, updater: Updater) -> None:
        """Give the slot back once the booted version passed its health gate, or keep
        it after a rollback (on_failure hold)."""
        try:
            policy = updater.policy()
        except PolicyError:
            return
        if policy.reboot != "fleet_lock":
            return
        state = updater.store.load()
        entry = updater.esp.slot_entry(updater.paths.booted_slot())
        last = state.last_result
        self.lock.settle(
            policy.fleet_lock,
            healthy=entry is not None and entry.state == "good" and state.phase != Phase.TRIAL,
            pending_version=state.target_version if state.phase == Phase.INSTALLED else "",
            rolled_back=last.version if last and last.result == "rolled-back" else "",
        )

    def status(self) -> dict[str, Any]:
        return {"lock": self.lock.status(), "held_back": dict(self.held_back)}
