"""Build step: bake the definition's provisioning config (Ignition JSON or Butane
YAML, translated and validated here) into the image at /usr/lib/keel/provision.ign,
where hostd's provisioner finds it when no config comes through fw_cfg or the ESP.

A baked config is in every copy of the image and every update bundle, so it is
readable by root only, and the build warns when it holds secrets: those belong in a
per-machine config (docs/provisioning.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core.tree import write_file
from composer.definition.model import ImageDefinition
from composer.provisioning.butane import ignition_from_file
from hostd.ignition.config import Config, parse_config

if TYPE_CHECKING:
    from composer.build.context import BuildContext

BAKED_CONFIG = "usr/lib/keel/provision.ign"
# Only keel-provision (root) reads it, and it may hold password hashes.
BAKED_CONFIG_MODE = 0o600

# PEM armour of any private key: PKCS#8, RSA, EC, OpenSSH, encrypted, PGP.
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z0-9 ]*-----")


def bake_config(defn: ImageDefinition, tree: Path) -> Path | None:
    if defn.provisioning_config is None:
        return None
    dest = tree / BAKED_CONFIG
    write_file(dest, ignition_from_file(defn.provisioning_config), BAKED_CONFIG_MODE, 0, 0)
    return dest


def secrets_in(config: Config) -> list[str]:
    """What in the config is secret: password hashes and private keys, by where."""
    found = [
        f"a password hash for user {user.name!r}" for user in config.users if user.password_hash
    ]
    for entry in config.files:
        written = [entry.contents or b"", *entry.append]
        if any(_PRIVATE_KEY.search(data) for data in written):
            found.append(f"a private key in the contents of {entry.path}")
    for unit in config.units:
        texts = [unit.contents or "", *(dropin.contents for dropin in unit.dropins)]
        if any(_PRIVATE_KEY.search(text.encode()) for text in texts):
            found.append(f"a private key in unit {unit.name}")
    return found


def secrets_warning(defn: ImageDefinition, ignition: bytes) -> str | None:
    """The warning for a baked config that holds secrets, or None."""
    found = secrets_in(parse_config(ignition))
    if not found:
        return None
    written = defn.resolved["provisioning"]["config"]
    return (
        f"field 'provisioning.config' names {written!r}, which is baked into the image and "
        f"every update bundle, and it holds {', '.join(found)}; put secrets in a "
        "per-machine config (fw_cfg or the ESP) instead, see docs/provisioning.md"
    )


def step(ctx: BuildContext) -> None:
    baked = bake_config(ctx.definition, ctx.tree)
    if baked is None:
        return
    warning = secrets_warning(ctx.definition, baked.read_bytes())
    if warning:
        ctx.progress.warn(ctx.definition.origin("provisioning.config"), warning)
