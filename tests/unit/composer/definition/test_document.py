"""Reading a definition's YAML: what YAML allows but a definition must not contain,
each named by file and line."""

from __future__ import annotations

from tests.unit.composer.definition.conftest import MINIMAL, Workspace


def test_yaml_syntax_error_names_file_and_line(ws: Workspace) -> None:
    ws.image("x.yaml", "name: x\nversion: '1'\n  partitions: [\n")
    message = ws.error("x.yaml")
    assert message.startswith("images/x.yaml:3: invalid YAML: ")


def test_empty_file(ws: Workspace) -> None:
    ws.image("x.yaml", "# nothing yet\n")
    assert ws.error("x.yaml").startswith("images/x.yaml:1: the file is empty")


def test_top_level_must_be_a_mapping(ws: Workspace) -> None:
    ws.image("x.yaml", "- name: x\n")
    assert ws.error("x.yaml").startswith("images/x.yaml:1: the top level is a list;")


def test_missing_definition_file(ws: Workspace) -> None:
    assert ws.error("nope.yaml") == "images/nope.yaml: no such image definition"


def test_duplicate_key(ws: Workspace) -> None:
    ws.image("x.yaml", MINIMAL + "name: again\n")
    assert ws.error("x.yaml") == (
        "images/x.yaml:7: field 'name' is written twice (first on line 1); keep only one"
    )
