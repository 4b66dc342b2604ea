"""The update, provisioning, docker and containers sections of a definition."""

from collections.abc import Callable
from pathlib import Path

import pytest

from composer.core.errors import KeelError
from composer.publish import keys
from tests.unit.conftest import Project


def test_defaults_leave_updates_manual_and_no_containers(
    project: Project, minimal: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEL_UPDATE_ROOT", raising=False)
    defn = project.load(minimal(""))
    assert defn.update.reboot == "manual"
    assert defn.update.root is None
    assert defn.containers.services == ()
    assert defn.docker.tls is False
    assert defn.provisioning_config is None


def test_files_are_relative_to_the_definition_that_names_them(
    project: Project, minimal: Callable[[str], str]
) -> None:
    keys.generate_keys(project.images / "keys")  # a root that is not real is refused
    (project.images / "web.tar").write_bytes(b"")
    defn = project.load(
        minimal("""
        update: {root: keys/root.json, reboot: window, window: {days: [Sun], start: "03:00"}}
        containers:
          archives: [web.tar]
          services:
            - {name: web, image: "demo/web:1", ports: ["8080:80"], volumes: ["data:/data"]}
    """)
    )
    assert defn.update.root == (project.images / "keys/root.json").absolute()
    assert defn.update.window.days == ("Sun",)
    assert defn.containers.archives == ((project.images / "web.tar").absolute(),)
    assert defn.containers.services[0].restart == "always"


def test_missing_archive_names_field_and_line(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    with pytest.raises(KeelError) as caught:
        project.load(minimal("containers:\n  archives: [nope.tar]\n"))
    message = str(caught.value)
    assert "test.yaml:5" in message
    assert "containers.archives.0" in message
    assert "nope.tar" in message


def test_duplicate_container_names_are_refused(
    project: Project, minimal: Callable[[str], str]
) -> None:
    with pytest.raises(KeelError, match="container name 'web' is used twice"):
        project.load(
            minimal("""
            containers:
              services:
                - {name: web, image: a}
                - {name: web, image: b}
        """)
        )
