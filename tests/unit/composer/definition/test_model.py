"""The JSON Schema is the one place a default is written: the dataclasses keep none of
their own, except FileAttributes' "not declared", which the schema leaves unset too."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from composer.definition import model
from composer.definition.schema import dereference, schema

# Dataclasses that keep defaults, and the schema of the mapping each is built from.
KEPT_DEFAULTS = {model.FileAttributes: "#/$defs/fileAttributes"}


def defaults(cls: type) -> dict[str, Any]:
    return {
        field.name: field.default
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING
        or field.default_factory is not dataclasses.MISSING
    }


def test_only_the_listed_dataclasses_keep_defaults() -> None:
    classes = [cls for _, cls in inspect.getmembers(model, dataclasses.is_dataclass)]
    with_defaults = {cls for cls in classes if defaults(cls)}
    assert with_defaults == set(KEPT_DEFAULTS)


def test_each_kept_default_is_what_the_schema_leaves_when_the_field_is_unset() -> None:
    root = schema()
    for cls, ref in KEPT_DEFAULTS.items():
        properties = dereference({"$ref": ref}, root)["properties"]
        for name, default in defaults(cls).items():
            field_schema = dereference(properties[name], root)
            # No schema default: the field stays unset, which the dataclass says as None.
            assert field_schema.get("default") == default, f"{cls.__name__}.{name}"
