"""The schema is the one declaration of every field: it must be complete enough to serve
editors and the reference, and the committed reference must be what it generates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from composer.core.paths import SCHEMA_FILE
from composer.tools.docref import REFERENCE_FILE, main, render_reference


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def _object_schemas(schema: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object that declares fields, with where it sits in the schema."""
    if isinstance(schema, dict):
        if "properties" in schema:
            yield where, schema
        for key, value in schema.items():
            if key not in ("default", "enum"):
                yield from _object_schemas(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from _object_schemas(item, f"{where}/{index}")


def test_committed_reference_is_generated_from_the_schema() -> None:
    committed = REFERENCE_FILE.read_text(encoding="utf-8")
    assert committed == render_reference(_schema()), (
        "docs/image-definition.md is stale; run: python -m composer.tools.docref"
    )


def test_schema_is_valid_draft_2020_12_and_named_for_editors() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema["title"]


def test_every_field_has_a_description() -> None:
    undescribed = [
        f"{where}/properties/{name}"
        for where, obj in _object_schemas(_schema())
        for name, field in obj["properties"].items()
        if not field.get("description")
    ]
    assert undescribed == []


def test_every_object_with_fields_refuses_unknown_ones() -> None:
    open_objects = [
        where
        for where, obj in _object_schemas(_schema())
        if obj.get("additionalProperties") is not False
    ]
    assert open_objects == []


def test_nested_objects_get_their_own_section_with_defaults() -> None:
    schema = {
        "title": "Thing",
        "description": "A thing.",
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"description": "How big.", "type": "integer"},
            "inner": {
                "description": "Inside.",
                "type": "object",
                "properties": {
                    "colour": {"description": "Which.", "type": "string", "default": "red"}
                },
            },
            "items": {
                "description": "Several.",
                "type": "array",
                "items": {"$ref": "#/$defs/item"},
            },
        },
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "label": {"description": "Its label.", "title": "a word", "type": "string"}
                },
            }
        },
    }
    reference = render_reference(schema)
    assert reference.startswith("# Thing reference\n")
    assert "| `size` | integer | required | How big. |" in reference
    assert "## `inner`\n\nInside.\n" in reference
    assert '| `colour` | text | `"red"` | Which. |' in reference
    assert "| `items` | list of mapping | — | Several. |" in reference
    assert "## `items[]`" in reference
    assert "| `label` | text | — | Its label. Write a word. |" in reference


def test_pipes_in_descriptions_do_not_break_tables() -> None:
    schema = {"properties": {"a": {"description": "x | y", "type": "string"}}}
    assert "| x \\| y |" in render_reference(schema)


def test_main_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "reference.md"
    assert main(["--check", "--output", str(output)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == render_reference(_schema())
    assert main(["--check", "--output", str(output)]) == 0
