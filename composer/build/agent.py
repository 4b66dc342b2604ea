"""Build step: install hostd, the host agent, into the image.

hostd runs on the image's own Python from /usr/lib/keel/python: the hostd package of
this checkout plus its pinned dependencies (hostd/requirements.txt), downloaded once
per requirements content and guest Python version into the package cache."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from composer.core import commands
from composer.core.errors import KeelError
from composer.core.paths import PROJECT_ROOT, cache_root

if TYPE_CHECKING:
    from composer.build.context import BuildContext

AGENT_DIR = "usr/lib/keel/python"

KEELCTL = """#!/bin/sh
# keelctl: the host agent's command line (hostd/ in the Keel repository).
PYTHONPATH=/usr/lib/keel/python PYTHONDONTWRITEBYTECODE=1 exec /usr/bin/python3 -m hostd.cli "$@"
"""


AGENT_REQUIREMENTS = PROJECT_ROOT / "hostd" / "requirements.txt"


def guest_python_version(tree: Path) -> str:
    """The image's python3 as MAJOR.MINOR, read from the /usr/bin/python3 link."""
    link = tree / "usr/bin/python3"
    target = os.readlink(link) if link.is_symlink() else ""
    match = re.fullmatch(r"(?:.*/)?python(3\.[0-9]+)", target)
    if match is None:
        raise KeelError(
            "the image has no /usr/bin/python3 -> python3.N link, which hostd runs on",
            hint="keep python3 in the definition's packages",
        )
    return match[1]


def _agent_dependencies(python_version: str) -> Path:
    """hostd's pinned dependencies (python-tuf and what it needs), installed once per
    requirements.txt content and guest Python version into the cache."""
    digest = hashlib.sha256(AGENT_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    cached = cache_root() / "agent" / f"{digest}-py{python_version}"
    if cached.is_dir():
        return cached
    partial = cached.with_name(f"{cached.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    commands.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", partial, "--only-binary=:all:", "--no-compile",
            "--python-version", python_version, "--implementation", "cp",
            "--platform", "manylinux2014_x86_64", "-r", AGENT_REQUIREMENTS,
        ],
        hint="hostd/requirements.txt pins hostd's dependencies; pip must reach the package index",
    )  # fmt: skip
    # pip's own records are of no use in an image that never runs pip.
    for junk in [*partial.glob("*.dist-info"), partial / "bin"]:
        if junk.is_dir():
            shutil.rmtree(junk)
    partial.rename(cached)
    return cached


def install_agent(tree: Path) -> None:
    """Copy the hostd package and its vendored dependencies into the image."""
    dependencies = _agent_dependencies(guest_python_version(tree))
    shutil.copytree(dependencies, tree / AGENT_DIR, dirs_exist_ok=True)
    dest = tree / AGENT_DIR / "hostd"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        PROJECT_ROOT / "hostd", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for path in [tree / AGENT_DIR, *(tree / AGENT_DIR).rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    keelctl = tree / "usr/bin/keelctl"
    keelctl.write_text(KEELCTL)
    keelctl.chmod(0o755)


def step(ctx: BuildContext) -> None:
    install_agent(ctx.tree)
