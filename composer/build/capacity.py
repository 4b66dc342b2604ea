"""Every "does it fit" check of a build, and the root size remembered between builds.

A partition too small for its content must be refused with the field to change and a
size that fits, as early as the size is known: the root slot even before the slow
bootstrap when an earlier build of the same package set recorded how big its root
image got."""

from __future__ import annotations

import json
from pathlib import Path

from composer.build.bootstrap import cache_key
from composer.core.errors import KeelError
from composer.core.paths import cache_root
from composer.definition.model import ImageDefinition
from hostd.formats.sizes import MIB

# FAT's own tables and directories take a little room beyond the files.
ESP_OVERHEAD = 8 * MIB
# ext4's journal and metadata, and room for a first boot's writes before anything grows.
VAR_OVERHEAD = 32 * MIB


def _check_fits(
    defn: ImageDefinition, field_name: str, needed: int, available: int, what: str
) -> None:
    if needed > available:
        suggestion = -(-needed * 5 // 4 // MIB)  # a quarter more, rounded up to MiB
        raise KeelError(
            f"{defn.origin(f'partitions.{field_name}')}: {what} needs {needed / MIB:.1f} MiB "
            f"but partitions.{field_name} is {available // MIB} MiB",
            hint=f"set partitions.{field_name} to at least {suggestion}MiB",
        )


def check_root(defn: ImageDefinition, root_image_size: int) -> None:
    _check_fits(defn, "root", root_image_size, defn.partitions.root, "the root filesystem")


def check_esp(defn: ImageDefinition, esp_content: int, uki: int) -> None:
    """The ESP holds its first content plus, during an update, the other slot's UKI."""
    _check_fits(
        defn,
        "esp",
        esp_content + uki + ESP_OVERHEAD,
        defn.partitions.esp,
        "the ESP (two slots' unified kernel images)",
    )


def check_var(defn: ImageDefinition, seed_size: int) -> None:
    _check_fits(
        defn,
        "var",
        seed_size * 2 + VAR_OVERHEAD,
        defn.partitions.var,
        "the var partition's initial content",
    )


def check_remembered_root(defn: ImageDefinition) -> None:
    """Refuse a root slot too small for this package set before any slow work, when an
    earlier build of the same packages tells how big the root image gets."""
    known = remembered_root_size(defn)
    if known is not None:
        check_root(defn, known)


def _sizes_file(defn: ImageDefinition) -> Path:
    return cache_root() / "bootstrap" / f"{cache_key(defn)}.sizes.json"


def remember_root_size(defn: ImageDefinition, size: int) -> None:
    """Note the root image size this package set gave, for the next build's early check."""
    _sizes_file(defn).write_text(json.dumps({"root_image": size}) + "\n")


def remembered_root_size(defn: ImageDefinition) -> int | None:
    """The root image size an earlier build of this package set gave, if any."""
    try:
        return int(json.loads(_sizes_file(defn).read_text())["root_image"])
    except (OSError, ValueError, KeyError):
        return None
