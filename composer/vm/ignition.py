"""The provisioning config handed to the guest through fw_cfg.

Every VM gets a config that authorizes the VM's own SSH key for root, so `keel ssh`
and the test harness can always log in. A user's Ignition JSON is merged rather than
replaced; Butane YAML is translated to Ignition first (composer/provisioning/butane.py)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from composer.provisioning.butane import looks_like_butane, translate

IGNITION_VERSION = "3.4.0"


@dataclass(frozen=True)
class GuestConfig:
    data: bytes
    # False when the VM key could not be added (not JSON): keel ssh may then fail.
    has_vm_key: bool


def _authorize(config: dict[str, Any], public_key: str) -> dict[str, Any]:
    merged: dict[str, Any] = copy.deepcopy(config)  # never alter the caller's dict
    merged.setdefault("ignition", {}).setdefault("version", IGNITION_VERSION)
    users = merged.setdefault("passwd", {}).setdefault("users", [])
    root = next((u for u in users if u.get("name") == "root"), None)
    if root is None:
        root = {"name": "root"}
        users.append(root)
    keys = root.setdefault("sshAuthorizedKeys", [])
    if public_key not in keys:
        keys.append(public_key)
    return merged


def guest_config(user_config: bytes | None, public_key: str) -> GuestConfig:
    """The bytes to deliver for an optional user config and the VM's public key."""
    if user_config is None:
        return GuestConfig(_dump(_authorize({}, public_key)), True)
    if looks_like_butane(user_config):
        # Butane given as bytes has no folder for contents.local (keel run translates
        # files itself, relative to the Butane file; see composer/vm/cli.py).
        user_config = translate(user_config.decode(), name="the Butane config")
    try:
        parsed = json.loads(user_config)
    except (UnicodeDecodeError, ValueError):
        return GuestConfig(user_config, False)
    if not isinstance(parsed, dict):
        return GuestConfig(user_config, False)
    return GuestConfig(_dump(_authorize(parsed, public_key)), True)


def _dump(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=2) + "\n").encode()
