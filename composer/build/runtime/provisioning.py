"""Build step: bake the definition's provisioning config (Ignition JSON or Butane
YAML, translated and validated here) into the image at /usr/lib/keel/provision.ign,
where hostd's provisioner finds it when no config comes through fw_cfg or the ESP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from composer.definition.model import ImageDefinition
from composer.provisioning.butane import ignition_from_file

if TYPE_CHECKING:
    from composer.build.context import BuildContext

BAKED_CONFIG = "usr/lib/keel/provision.ign"


def bake_config(defn: ImageDefinition, tree: Path) -> Path | None:
    if defn.provisioning_config is None:
        return None
    dest = tree / BAKED_CONFIG
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(ignition_from_file(defn.provisioning_config))
    dest.chmod(0o644)
    return dest


def step(ctx: BuildContext) -> None:
    bake_config(ctx.definition, ctx.tree)
