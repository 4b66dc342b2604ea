"""Build step: when the Docker engine starts.

Debian enables docker.service and containerd.service for multi-user.target, so an idle
host keeps about 140 MB in dockerd and containerd before anyone asks for a container.
Keel starts the engine on demand instead, as Fedora CoreOS does: docker.socket listens
on /run/docker.sock and starts dockerd (which pulls in containerd) on the first
client, local or `docker -H ssh://`. A declared container requires docker.service,
so an image with containers.services still starts the engine at boot, and so does a
TCP endpoint (docker.tls), which dockerd itself must listen on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from composer.definition.model import ImageDefinition

if TYPE_CHECKING:
    from composer.build.context import BuildContext

BOOT_WANTS = "etc/systemd/system/multi-user.target.wants"
ENGINE_UNITS = ("docker.service", "containerd.service")


def start_engine_on_demand(defn: ImageDefinition, tree: Path) -> bool:
    """Leave only docker.socket enabled; False when the image has no engine to start."""
    if not (tree / BOOT_WANTS / "docker.service").is_symlink():
        return False
    if not (tree / "etc/systemd/system/sockets.target.wants/docker.socket").is_symlink():
        return False  # no socket to start it: keep the boot-time start
    if defn.docker.tls:
        return False
    for unit in ENGINE_UNITS:
        (tree / BOOT_WANTS / unit).unlink(missing_ok=True)
    return True


def step(ctx: BuildContext) -> None:
    start_engine_on_demand(ctx.definition, ctx.tree)
