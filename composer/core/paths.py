"""Where Keel finds its inputs and puts its outputs."""

from __future__ import annotations

import os
from pathlib import Path

# The project checkout: templates/, overlays/ and images/ live beside the packages.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = PROJECT_ROOT / "templates"
OVERLAYS_DIR = PROJECT_ROOT / "overlays"
IMAGES_DIR = PROJECT_ROOT / "images"
SCHEMA_FILE = PROJECT_ROOT / "composer" / "definition" / "image-definition.schema.json"
DEFAULT_IMAGE = IMAGES_DIR / "docker-host.yaml"


def build_root() -> Path:
    """Where builds land by default: build/ in the current directory."""
    return Path(os.environ.get("KEEL_BUILD_DIR", "build"))


def cache_root() -> Path:
    """The package cache; KEEL_CACHE_DIR overrides, else XDG cache."""
    if "KEEL_CACHE_DIR" in os.environ:
        return Path(os.environ["KEEL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "keel"


def vm_root() -> Path:
    """One folder per VM started by `keel run`; KEEL_VM_DIR overrides."""
    if "KEEL_VM_DIR" in os.environ:
        return Path(os.environ["KEEL_VM_DIR"])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "keel" / "vms"
