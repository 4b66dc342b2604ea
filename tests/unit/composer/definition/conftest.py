"""A throwaway project for loading definitions, shared by the tests of this package."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.definition.load import load_definition
from composer.definition.model import ImageDefinition

MiB = 1024**2


MINIMAL = """\
name: base
version: "1.0"
partitions:
  esp: 128MiB
  root: 512MiB
  var: 1GiB
"""


class Workspace:
    """A throwaway project: images/, templates/ and overlays/ under tmp_path, which is
    also the current directory, so messages name files as "images/x.yaml"."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        self.templates = root / "templates"
        self.overlays = root / "overlays"
        for folder in (self.images, self.templates, self.overlays):
            folder.mkdir()

    def image(self, name: str, text: str) -> Path:
        path = self.images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def template(self, relative: str) -> None:
        path = self.templates / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{{ hostname }}\n")

    def overlay_file(self, overlay: str, relative: str) -> None:
        path = self.overlays / overlay / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")

    def load(self, name: str) -> ImageDefinition:
        return load_definition(
            self.images / name,
            templates_dir=self.templates,
            overlays_dir=self.overlays,
            images_dir=self.images,
        )

    def error(self, name: str) -> str:
        with pytest.raises(KeelError) as caught:
            self.load(name)
        return caught.value.message


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path)
