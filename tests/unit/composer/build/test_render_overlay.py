from collections.abc import Callable
from pathlib import Path

import pytest

from composer.build.overlay import apply_overlays
from composer.build.render import render_templates
from composer.core.errors import KeelError
from tests.unit.conftest import Project


def test_templates_render_variables_and_image_facts(
    project: Project, image_tree: Path, minimal: Callable[[str], str]
) -> None:
    (project.templates / "motd.j2").write_text(
        "{{ greeting }} from {{ image.name }} {{ image.version }}\n"
    )
    defn = project.load(
        minimal("""
        variables: {greeting: hello}
        templates:
          - {source: motd.j2, target: /etc/motd, mode: "0600", owner: "root:docker"}
    """)
    )
    render_templates(defn, image_tree, project.templates)
    motd = image_tree / "etc/motd"
    assert motd.read_text() == "hello from test 1.0.0\n"
    assert motd.stat().st_mode & 0o777 == 0o600
    assert motd.stat().st_gid == 998


def test_undefined_variable_names_template_and_definition_line(
    project: Project, image_tree: Path, minimal: Callable[[str], str]
) -> None:
    (project.templates / "bad.j2").write_text("{{ nope }}\n")
    defn = project.load(
        minimal("""
        templates:
          - source: bad.j2
            target: /etc/bad
    """)
    )
    with pytest.raises(KeelError) as caught:
        render_templates(defn, image_tree, project.templates)
    message = str(caught.value)
    assert "test.yaml:6" in message
    assert "bad.j2" in message
    assert "nope" in message


def test_template_never_writes_through_a_symlink_out_of_the_tree(
    project: Project, image_tree: Path, tmp_path: Path, minimal: Callable[[str], str]
) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("host\n")
    (image_tree / "etc/resolv.conf").symlink_to(outside)
    (project.templates / "resolv.j2").write_text("nameserver 127.0.0.53\n")
    defn = project.load(
        minimal("""
        templates: [{source: resolv.j2, target: /etc/resolv.conf}]
    """)
    )
    render_templates(defn, image_tree, project.templates)
    assert outside.read_text() == "host\n"
    assert not (image_tree / "etc/resolv.conf").is_symlink()


def test_unknown_owner_is_reported_with_its_place(
    project: Project, image_tree: Path, minimal: Callable[[str], str]
) -> None:
    (project.templates / "x.j2").write_text("x\n")
    defn = project.load(
        minimal("""
        templates: [{source: x.j2, target: /etc/x, owner: "nobody-here:root"}]
    """)
    )
    with pytest.raises(KeelError, match="user 'nobody-here' does not exist in the image"):
        render_templates(defn, image_tree, project.templates)


def test_overlays_copy_files_symlinks_and_declared_modes(
    project: Project, image_tree: Path, minimal: Callable[[str], str]
) -> None:
    src = project.overlays / "extra"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_text("#!/bin/sh\n")
    (src / "usr/bin/tool").chmod(0o755)
    (src / "etc").mkdir()
    (src / "etc/plain.conf").write_text("a=1\n")
    (src / "etc/secret").write_text("s\n")
    (src / "etc/link").symlink_to("plain.conf")
    defn = project.load(
        minimal("""
        overlays:
          - source: extra
            files:
              etc/secret: {mode: "0640", owner: "root:docker"}
    """)
    )
    apply_overlays(defn, image_tree, project.overlays)
    assert (image_tree / "usr/bin/tool").stat().st_mode & 0o777 == 0o755
    assert (image_tree / "etc/plain.conf").stat().st_mode & 0o777 == 0o644
    secret = (image_tree / "etc/secret").stat()
    assert (secret.st_mode & 0o777, secret.st_gid) == (0o640, 998)
    assert (image_tree / "etc/link").readlink() == Path("plain.conf")
