"""Build step 4: copy overlays/ folders into the tree with their declared modes.

A file's mode is the one declared in the definition, else 0755 for an executable
source and 0644 otherwise (git keeps only the executable bit, so nothing else of the
checkout's modes is meaningful); owner root:root unless declared. Symlinks are copied
as symlinks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core.paths import OVERLAYS_DIR
from composer.core.tree import image_path, resolve_owner, write_file
from composer.definition.model import FileAttributes, ImageDefinition, Overlay

if TYPE_CHECKING:
    from composer.build.context import BuildContext


def _default_mode(source: Path) -> int:
    if source.is_dir():
        return 0o755
    return 0o755 if os.access(source, os.X_OK) else 0o644


def apply_overlay(
    overlay: Overlay, tree: Path, where: str, overlays_dir: Path = OVERLAYS_DIR
) -> int:
    """Copy one overlay folder; returns how many entries were written."""
    root = overlays_dir / overlay.source
    declared = dict(overlay.files)
    count = 0
    for source in sorted(root.rglob("*")):
        rel = str(source.relative_to(root))
        target = image_path(tree, os.path.join(overlay.target, rel))
        attrs = declared.get(rel, FileAttributes())
        if source.is_symlink():
            if target.is_symlink() or target.exists():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))
        elif source.is_dir():
            if not target.is_dir():
                target.mkdir(parents=True)
                target.chmod(attrs.mode if attrs.mode is not None else 0o755)
            elif attrs.mode is not None:
                target.chmod(attrs.mode)
            if attrs.owner is not None:
                os.chown(target, *resolve_owner(tree, attrs.owner, where))
        else:
            mode = attrs.mode if attrs.mode is not None else _default_mode(source)
            uid, gid = resolve_owner(tree, attrs.owner or "root:root", where)
            write_file(target, source.read_bytes(), mode, uid, gid)
        count += 1
    return count


def apply_overlays(defn: ImageDefinition, tree: Path, overlays_dir: Path = OVERLAYS_DIR) -> int:
    total = 0
    for index, overlay in enumerate(defn.overlays):
        total += apply_overlay(overlay, tree, str(defn.origin(f"overlays.{index}")), overlays_dir)
    return total


def step(ctx: BuildContext) -> None:
    apply_overlays(ctx.definition, ctx.tree)
