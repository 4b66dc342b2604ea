"""Write docs/image-definition.md from the JSON Schema, so the reference and the
validator can never disagree: the schema is the one place a field is declared.

    python -m composer.tools.docref          # regenerate the reference
    python -m composer.tools.docref --check  # exit 1 if the committed reference is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core.paths import PROJECT_ROOT, SCHEMA_FILE
from composer.definition.schema import dereference

REFERENCE_FILE = PROJECT_ROOT / "docs" / "image-definition.md"

_TYPE_WORDS = {
    "string": "text",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "mapping",
}


@dataclass(frozen=True)
class _Section:
    """One table: the fields of one kind of mapping, found at `where` in a definition."""

    where: str  # "" for the top level, else "debian", "templates[]", ...
    schema: dict[str, Any]


def render_reference(schema: dict[str, Any]) -> str:
    """The Markdown reference of an image definition schema."""
    lines = [
        f"# {schema.get('title', 'Image definition')} reference",
        "",
        "<!-- Generated from composer/definition/image-definition.schema.json by "
        "`python -m composer.tools.docref`; edit the schema, not this file. -->",
        "",
        schema.get("description", ""),
        "",
    ]
    for section in _sections(schema, _Section("", schema)):
        lines.extend(_render_section(section, schema))
    return "\n".join(lines).rstrip("\n") + "\n"


def _sections(root: dict[str, Any], section: _Section) -> Iterator[_Section]:
    """This section, then (depth first, in field order) every mapping nested in it."""
    yield section
    for name, field_schema in section.schema.get("properties", {}).items():
        nested = _nested_mapping(root, _resolve(root, field_schema))
        if nested is not None:
            suffix, nested_schema = nested
            where = f"{section.where}.{name}" if section.where else name
            yield from _sections(root, _Section(where + suffix, nested_schema))


def _nested_mapping(
    root: dict[str, Any], field_schema: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """A mapping with named fields inside this field, and how its place is written."""
    if "properties" in field_schema:
        return "", field_schema
    items = field_schema.get("items")
    if isinstance(items, dict) and "properties" in _resolve(root, items):
        return "[]", _resolve(root, items)
    values = field_schema.get("additionalProperties")
    if isinstance(values, dict) and "properties" in _resolve(root, values):
        return ".<path>", _resolve(root, values)
    return None


def _render_section(section: _Section, root: dict[str, Any]) -> list[str]:
    heading = f"`{section.where}`" if section.where else "Top level"
    lines = [f"## {heading}", ""]
    if section.where and section.schema.get("description"):
        lines += [section.schema["description"], ""]
    lines += ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    required = set(section.schema.get("required", []))
    for name, field_schema in section.schema.get("properties", {}).items():
        resolved = _resolve(root, field_schema)
        cells = [
            f"`{name}`",
            _type_of(root, resolved),
            "required" if name in required else _default_of(resolved),
            _description_of(root, resolved),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def _resolve(root: dict[str, Any], subschema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local "$ref" the way the loader does."""
    return dereference(subschema, root)


def _type_of(root: dict[str, Any], schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type_of(root, _resolve(root, option)) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"list of {_type_of(root, _resolve(root, schema['items']))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "mapping of path to mapping"
    return _TYPE_WORDS.get(str(kind), "any")


def _default_of(schema: dict[str, Any]) -> str:
    if "default" not in schema:
        return "—"
    return f"`{json.dumps(schema['default'])}`"


def _description_of(root: dict[str, Any], schema: dict[str, Any]) -> str:
    """The field's description, then what a value looks like (the schema's title)."""
    text = str(schema.get("description", ""))
    items = schema.get("items")
    title = schema.get("title") or (
        _resolve(root, items).get("title") if isinstance(items, dict) else None
    )
    if title:
        each = "Each item is" if "items" in schema else "Write"
        text = f"{text} {each} {title}."
    return text.strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/image-definition.md.")
    parser.add_argument(
        "--check", action="store_true", help="only report whether the file is up to date"
    )
    parser.add_argument("--output", type=Path, default=REFERENCE_FILE)
    args = parser.parse_args(argv)
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    reference = render_reference(schema)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != reference:
            print(f"{args.output} is stale; run: python -m composer.tools.docref", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(reference, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
