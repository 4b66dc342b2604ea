"""Schema errors as messages: file, line and field in every one, and what to write
instead."""

from __future__ import annotations

import pytest

from tests.unit.composer.definition.conftest import MINIMAL, Workspace


def test_unknown_field_suggests_the_close_name(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "packges: [curl]\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:7: unknown field 'packges' at top level")
    assert "did you mean 'packages'?" in message
    assert "(allowed: name, version," in message


def test_unknown_nested_field_names_its_mapping(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "debian:\n  suit: trixie\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: unknown field 'suit' in 'debian'; did you mean 'suite'?" in message


def test_size_that_is_not_a_size(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL.replace("root: 512MiB", "root: big"))
    message = ws.error("x.yaml")
    assert (
        "images/x.yaml:5: field 'partitions.root' must be a size such as \"512MiB\" "
        "or a number of bytes, not 'big'" in message
    )


def test_version_written_as_a_number(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL.replace('"1.0"', "1.0"))
    message = ws.error("x.yaml")
    assert (
        "images/x.yaml:2: field 'version' is the number 1.0; write it as a string: "
        'version: "1.0"' in message
    )


def test_mode_written_as_a_number_keeps_its_leading_zero(ws: Workspace) -> None:
    ws.template("a.j2")
    ws.image("x.yaml", MINIMAL + "templates:\n  - {source: a.j2, target: /a, mode: 0755}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: field 'templates.0.mode' is the number 0755" in message
    assert 'mode: "0755"' in message


def test_missing_partitions_points_at_extends(ws: Workspace) -> None:
    ws.image("x.yaml", 'name: x\nversion: "1"\n')
    message = ws.error("x.yaml")
    assert message == (
        "images/x.yaml:1: required field 'partitions' is missing "
        "(it may also come from the definition named in 'extends')"
    )


def test_template_target_must_be_absolute(ws: Workspace) -> None:
    ws.template("a.j2")
    ws.image("x.yaml", MINIMAL + "templates:\n  - {source: a.j2, target: etc/a}\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:8: field 'templates.0.target' must be an absolute path" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("name: Docker_Host", "field 'name' must be a lowercase name"),
        (f"name: {'a' * 64}", "field 'name' is 64 characters long; shorten it to at most 63"),
        ("variables: {my-var: 1}", "key 'my-var' in 'variables' must be a name usable"),
        ("debian: {architecture: arm64}", "field 'debian.architecture' must be one of 'x86-64'"),
        ("packages: curl", "field 'packages' must be a list, not 'curl'"),
        ("description:", "field 'description' is empty"),
        ("kernel: {cmdline: [yes]}", "field 'kernel.cmdline.0' is the boolean true (written yes)"),
        ("variables: {1: x}", "the key 1 in 'variables' is read as the number 1; quote it"),
    ],
)
def test_bad_values_name_file_line_and_field(ws: Workspace, line: str, expected: str) -> None:
    without_name = MINIMAL.replace("name: base\n", "")
    ws.image("x.yaml", without_name + line + "\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:6: ")
    assert expected in message
