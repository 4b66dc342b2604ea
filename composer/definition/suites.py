"""The Debian suites Keel builds images from, and what differs between them.

Only facts that cannot be read from the built tree live here. What the tree tells
(the guest's Python version, which systemd units a package ships, what initramfs-tools
puts into the initrd) is read from the tree by the step that needs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Suite:
    name: str
    release: str
    # Packages this suite split into several: a definition names the package as it
    # always was and gets every part, so one definition builds on each suite.
    split_packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


SUITES: Mapping[str, Suite] = {
    "bookworm": Suite("bookworm", "12"),
    "trixie": Suite(
        "trixie",
        "13",
        # The docker command (and `docker system dial-stdio`, which `docker -H ssh://`
        # runs on the host) moved out of docker.io into docker-cli.
        split_packages={
            "docker.io": ("docker.io", "docker-cli"),
            # systemd-repart (which grows var on a bigger disk, keel-grow-var.service)
            # is a package of its own; bookworm's systemd still carries it.
            "systemd": ("systemd", "systemd-repart"),
        },
    ),
}
DEFAULT_SUITE = "trixie"


def packages_to_install(suite: str, packages: tuple[str, ...]) -> tuple[str, ...]:
    """The definition's packages with each split package expanded, in order, once each."""
    splits = SUITES[suite].split_packages
    expanded = [part for name in packages for part in splits.get(name, (name,))]
    return tuple(dict.fromkeys(expanded))


def package_source(suite: str, installed: str) -> str:
    """The package a definition names that brought `installed` in."""
    for name, parts in SUITES[suite].split_packages.items():
        if installed in parts:
            return name
    return installed
