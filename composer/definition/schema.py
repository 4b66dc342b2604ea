"""The image definition's JSON Schema: its validators, and the defaults it declares
(the one place a field's default is written)."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from composer.core.paths import SCHEMA_FILE

# Keywords whose values are maps of name -> subschema, and keywords holding data.
_SUBSCHEMA_MAPS = {"properties", "$defs", "patternProperties", "dependentSchemas"}
_DATA_KEYWORDS = {"default", "enum", "const", "examples"}


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@cache
def full_validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


@cache
def single_file_validator() -> Draft202012Validator:
    # One file of a chain may leave out what its parent or child provides (a base
    # without partitions, a child without a name); only the merged result must be
    # complete.
    return Draft202012Validator(_without_required(schema()))


def _without_required(subschema: Any) -> Any:
    if isinstance(subschema, list):
        return [_without_required(item) for item in subschema]
    if not isinstance(subschema, dict):
        return subschema
    stripped: dict[str, Any] = {}
    for key, value in subschema.items():
        if key == "required":
            continue
        if key in _DATA_KEYWORDS:
            stripped[key] = value
        elif key in _SUBSCHEMA_MAPS:
            stripped[key] = {name: _without_required(sub) for name, sub in value.items()}
        else:
            stripped[key] = _without_required(value)
    return stripped


def dereference(subschema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local "$ref", keeping the keywords written beside it (they win)."""
    ref = subschema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return subschema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**dereference(target, root), **{k: v for k, v in subschema.items() if k != "$ref"}}


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A valid document with the schema's defaults filled in (in place), so the resolved
    document describes the whole build."""
    filled: dict[str, Any] = _fill_defaults(data, schema(), schema())
    return filled


def _fill_defaults(data: Any, subschema: dict[str, Any], root: dict[str, Any]) -> Any:
    subschema = dereference(subschema, root)
    if isinstance(data, dict) and "properties" in subschema:
        for name, property_schema in subschema["properties"].items():
            property_schema = dereference(property_schema, root)
            if name not in data and "default" in property_schema:
                data[name] = copy.deepcopy(property_schema["default"])
            if name in data:
                data[name] = _fill_defaults(data[name], property_schema, root)
    elif isinstance(data, list) and isinstance(subschema.get("items"), dict):
        return [_fill_defaults(item, subschema["items"], root) for item in data]
    return data
