"""The update policy: where to look for updates, how often, and when to reboot.

The image carries /usr/lib/keel/update/policy.json (from the definition's `update`
section); /etc/keel/update.json on a host overrides any of its keys, so an operator
can change the policy without a new image."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hostd.fleetlock import FleetLockConfig, check_config
from hostd.formats import duration

IMAGE_POLICY = Path("/usr/lib/keel/update/policy.json")
HOST_POLICY = Path("/etc/keel/update.json")
# fleet_lock: inside the window, and only with a slot from the FleetLock server.
REBOOT_STRATEGIES = ("immediate", "window", "manual", "fleet_lock")
# check_interval: no scheduled checks; only `keelctl check` and `keelctl update` look.
NEVER = "never"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class PolicyError(Exception):
    pass


def parse_duration(text: str) -> int:
    """Seconds in a span written as in image definitions (hostd/formats/duration.py)."""
    try:
        number, unit = duration.split_duration(text)
    except duration.DurationError as error:
        raise PolicyError(str(error)) from None
    return number * duration.UNIT_SECONDS[unit]


@dataclass(frozen=True)
class Window:
    days: tuple[str, ...] = DAYS
    start: str = "02:00"
    duration: str = "2h"

    def contains(self, now: datetime) -> bool:
        """Whether now (local time) falls in a window that opened on one of the days.

        A window may run past midnight (Sat 23:00 for 3h ends Sun 02:00), so the
        windows that opened yesterday count too."""
        hours, minutes = (int(part) for part in self.start.split(":"))
        length = timedelta(seconds=parse_duration(self.duration))
        for days_back in range(0, 1 + length.days + 1):
            day = now - timedelta(days=days_back)
            if DAYS[day.weekday()] not in self.days:
                continue
            opens = day.replace(hour=hours, minute=minutes, second=0, microsecond=0)
            if opens <= now < opens + length:
                return True
        return False


@dataclass(frozen=True)
class Policy:
    name: str = ""
    architecture: str = ""
    repository: str = ""
    check_interval: str = "6h"
    reboot: str = "manual"
    window: Window = Window()
    fleet_lock: FleetLockConfig = field(default_factory=FleetLockConfig)
    # Fetch only the blocks the host lacks when the repository publishes an index;
    # false: always the full bundle.
    delta: bool = True

    def check_seconds(self) -> int | None:
        """Seconds between scheduled checks; None when the policy says "never"."""
        if self.check_interval == NEVER:
            return None
        return parse_duration(self.check_interval)

    def may_reboot(self, now: datetime) -> bool:
        """Whether an installed update may reboot the host on its own now."""
        if self.reboot == "immediate":
            return True
        if self.reboot in ("window", "fleet_lock"):
            # fleet_lock also needs the server's slot: the updater asks for it.
            return self.window.contains(now)
        return False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def policy_from(data: dict[str, Any]) -> Policy:
    window = data.get("window") or {}
    fleet = data.get("fleet_lock") or {}
    if not isinstance(fleet, dict):
        raise PolicyError("fleet_lock must be an object with base_url, group, on_failure")
    delta = data.get("delta", True)
    if not isinstance(delta, bool):
        raise PolicyError(f"delta is {delta!r}; write true or false")
    policy = Policy(
        name=str(data.get("name", "")),
        architecture=str(data.get("architecture", "")),
        repository=str(data.get("repository", "")),
        check_interval=str(data.get("check_interval", "6h")),
        reboot=str(data.get("reboot", "manual")),
        window=Window(
            days=tuple(window.get("days", DAYS)),
            start=str(window.get("start", "02:00")),
            duration=str(window.get("duration", "2h")),
        ),
        fleet_lock=FleetLockConfig(
            base_url=str(fleet.get("base_url", "")),
            group=str(fleet.get("group", "default")),
            on_failure=str(fleet.get("on_failure", "hold")),
        ),
        delta=delta,
    )
    _validate(policy)
    return policy


def _validate(policy: Policy) -> None:
    if policy.reboot not in REBOOT_STRATEGIES:
        raise PolicyError(
            f"reboot is {policy.reboot!r}; choose one of {', '.join(REBOOT_STRATEGIES)}"
        )
    policy.check_seconds()
    parse_duration(policy.window.duration)
    unknown = [day for day in policy.window.days if day not in DAYS]
    if unknown:
        raise PolicyError(f"window.days has {', '.join(unknown)}; days are {', '.join(DAYS)}")
    if not re.match(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", policy.window.start):
        raise PolicyError(f"window.start is {policy.window.start!r}; write a time as HH:MM")
    if policy.reboot == "fleet_lock":
        try:
            check_config(policy.fleet_lock)
        except ValueError as error:
            raise PolicyError(str(error)) from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise PolicyError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path} must hold a JSON object")
    return data


def load_policy(image: Path = IMAGE_POLICY, host: Path = HOST_POLICY) -> Policy:
    """The image's policy with the host's overrides; window and fleet_lock merge key
    by key."""
    data = _read(image)
    overrides = _read(host)
    window = {**(data.get("window") or {}), **(overrides.get("window") or {})}
    fleet = {**(data.get("fleet_lock") or {}), **(overrides.get("fleet_lock") or {})}
    try:
        return policy_from({**data, **overrides, "window": window, "fleet_lock": fleet})
    except PolicyError as error:
        raise PolicyError(f"update policy ({image}, {host}): {error}") from None
