"""Build step: the debug shell, only in images that ask for it (debug_shell: true).

keel-debug-shell.service is a root shell without login on the first virtio console,
for the QEMU test harness when SSH is not up. It starts only when QEMU sets a fw_cfg
entry, but whoever reaches the VM's debug socket is root in the guest, so an image
carries the unit only when its definition turns it on: test images do, the images a
user ships do not. The unit lives in its own overlay (overlays/debug-shell), which
this step copies like any other."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from composer.build.overlay import apply_overlay
from composer.core.paths import OVERLAYS_DIR
from composer.definition.model import ImageDefinition, Overlay

if TYPE_CHECKING:
    from composer.build.context import BuildContext

OVERLAY = Overlay(source="debug-shell", target="/", files=())


def install_debug_shell(
    defn: ImageDefinition, tree: Path, overlays_dir: Path = OVERLAYS_DIR
) -> bool:
    """Copy the debug shell's unit and its enablement link; False (nothing written)
    unless the definition turns it on."""
    if not defn.debug_shell:
        return False
    apply_overlay(OVERLAY, tree, str(defn.origin("debug_shell")), overlays_dir)
    return True


def step(ctx: BuildContext) -> None:
    install_debug_shell(ctx.definition, ctx.tree)
