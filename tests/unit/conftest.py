"""Shared helpers for unit tests: a small definition with its own templates/ and
overlays/, a fake image tree with the files the steps look up, and tampering with a
file's byte."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from composer.definition.load import load_definition
from composer.definition.model import ImageDefinition


def flip(path: Path, offset: int) -> None:
    """Change the byte at offset, whatever it was. Flipped, not overwritten: a fixed
    value may already be there (a verity tree's bytes depend on a random salt, and
    writing 0xff changed nothing in 1 run of 256, seen in CI)."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@dataclass
class Project:
    root: Path
    templates: Path
    overlays: Path
    images: Path

    def load(self, yaml_text: str, name: str = "test.yaml") -> ImageDefinition:
        path = self.images / name
        path.write_text(textwrap.dedent(yaml_text))
        return load_definition(
            path, templates_dir=self.templates, overlays_dir=self.overlays, images_dir=self.images
        )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(tmp_path, tmp_path / "templates", tmp_path / "overlays", tmp_path / "images")
    for folder in (proj.templates, proj.overlays, proj.images):
        folder.mkdir()
    return proj


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nsshd:x:104:65534::/run/sshd:/usr/sbin/nologin\n"
    )
    (tree / "etc/group").write_text("root:x:0:\ndocker:x:998:\n")
    return tree


MINIMAL = """\
name: test
version: "1.0.0"
partitions: {esp: 128MiB, root: 256MiB, var: 256MiB}
"""


@pytest.fixture
def minimal() -> Callable[[str], str]:
    def extend(extra: str) -> str:
        return MINIMAL + textwrap.dedent(extra)

    return extend
