"""Build step: the update policy and the update repository's root of trust.

hostd reads the policy (where to look for updates, how often, when to reboot) from
/usr/lib/keel/update/policy.json, and trusts only repositories signed under the TUF
root metadata baked next to it (docs/updates.md). The root file itself was checked
while the definition loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition

if TYPE_CHECKING:
    from composer.build.context import BuildContext

UPDATE_DIR = "usr/lib/keel/update"


def bake_update_trust(defn: ImageDefinition, tree: Path) -> None:
    """The update policy, and the repository's root metadata if the definition names one:
    hostd trusts only repositories signed under this root (docs/updates.md)."""
    dest = tree / UPDATE_DIR
    dest.mkdir(parents=True, exist_ok=True)
    policy = defn.update
    document = {
        "name": defn.name,
        "architecture": defn.debian.architecture,
        "repository": policy.repository,
        "check_interval": policy.check_interval,
        "reboot": policy.reboot,
        "window": {
            "days": list(policy.window.days),
            "start": policy.window.start,
            "duration": policy.window.duration,
        },
    }
    if policy.reboot == "fleet_lock" and not policy.fleet_lock.base_url:
        raise KeelError(
            "update.reboot is fleet_lock but update.fleet_lock.base_url is empty",
            hint="name the FleetLock server, e.g. fleet_lock: {base_url: http://lock:3333/}",
        )
    if policy.reboot == "fleet_lock" or policy.fleet_lock.base_url:
        document["fleet_lock"] = {
            "base_url": policy.fleet_lock.base_url,
            "group": policy.fleet_lock.group,
            "on_failure": policy.fleet_lock.on_failure,
        }
    (dest / "policy.json").write_text(json.dumps(document, indent=2) + "\n")
    (dest / "policy.json").chmod(0o644)
    trust_root = dest / "root.json"
    trust_root.unlink(missing_ok=True)
    if policy.root is not None:
        shutil.copyfile(policy.root, trust_root)
        trust_root.chmod(0o644)


def step(ctx: BuildContext) -> None:
    bake_update_trust(ctx.definition, ctx.tree)
