"""Turn JSON Schema errors into Problems a person can act on: the file and line of the
field, what is wrong with it, and what to write instead."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from composer.definition.document import Document
from composer.definition.problems import (
    DocPath,
    Problem,
    describe_path,
    describe_value,
    describe_where,
    dotted,
)


def schema_problems(document: Document, validator: Draft202012Validator) -> list[Problem]:
    problems: list[Problem] = []
    for error in validator.iter_errors(document.data):
        problems.extend(_explain(_SchemaError.from_jsonschema(error), document))
    return problems


@dataclass(frozen=True)
class _SchemaError:
    """The parts of a jsonschema error the messages need, with plain types."""

    keyword: str  # the failing schema keyword: "type", "required", ...
    expected: Any  # that keyword's value in the schema
    value: Any  # the value that failed
    schema: dict[str, Any]  # the (sub)schema holding the keyword
    path: DocPath
    about_key: bool  # a mapping key (propertyNames) failed, not a value
    message: str  # jsonschema's own wording, for keywords without a better one

    @classmethod
    def from_jsonschema(cls, error: ValidationError) -> _SchemaError:
        schema = error.schema if isinstance(error.schema, dict) else {}
        return cls(
            keyword=str(error.validator),
            expected=error.validator_value,
            value=error.instance,
            message=error.message,
            schema=schema,
            path=tuple(error.absolute_path),
            about_key="propertyNames" in error.schema_path,
        )


def _explain(error: _SchemaError, document: Document) -> Iterator[Problem]:
    if error.about_key:
        yield _bad_key(error, document)
        return
    explain = _EXPLAINERS.get(error.keyword, _explain_generic)
    yield from explain(error, document)


def _explain_unknown_fields(error: _SchemaError, document: Document) -> Iterator[Problem]:
    path = error.path
    allowed = list(error.schema.get("properties", {}))
    for key in error.value:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        advice = f"did you mean {close[0]!r}?" if close else "remove it or fix its name"
        yield Problem(
            document.origin((*path, key)),
            f"unknown field {key!r} {describe_where(path)}; {advice} "
            f"(allowed: {', '.join(allowed)})",
        )


def _explain_missing(error: _SchemaError, document: Document) -> Iterator[Problem]:
    path = error.path
    for name in error.expected:
        if name in error.value:
            continue
        inherited = (
            " (it may also come from the definition named in 'extends')"
            if not path or isinstance(path[-1], str)
            else f"; add it to {describe_path(path)}"
        )
        yield Problem(
            document.origin(path),
            f"required field {dotted((*path, name))!r} is missing{inherited}",
        )


_TYPE_NAMES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def _explain_type(error: _SchemaError, document: Document) -> Iterator[Problem]:
    path = error.path
    expected = error.expected
    value = error.value
    text = document.texts.get(path)
    if expected == "string" and value is not None and not isinstance(value, dict | list):
        # YAML turns 1.0, 0644 and yes into a number or a boolean; the fix is quotes.
        written = text if text is not None else str(value)
        as_yaml = f"{path[-1]}: " if path and isinstance(path[-1], str) else ""
        yield Problem(
            document.origin(path),
            f"field {dotted(path)!r} is {describe_value(value, text)}; write it as a "
            f'string: {as_yaml}"{written}"',
        )
        return
    if value is None:
        yield Problem(
            document.origin(path),
            f"field {dotted(path)!r} is empty; give it a value or remove the line",
        )
        return
    wanted = _TYPE_NAMES.get(str(expected), str(expected))
    yield Problem(
        document.origin(path),
        f"field {dotted(path)!r} must be {wanted}, not {document.shown(path, value)}",
    )


def _explain_with_title(error: _SchemaError, document: Document) -> Iterator[Problem]:
    """pattern, anyOf, enum...: the schema's title says what the value should look like."""
    path = error.path
    if error.keyword == "enum":
        wanted = "one of " + ", ".join(repr(v) for v in error.expected)
    else:
        wanted = error.schema.get("title") or f"matching {error.schema.get('pattern')}"
    yield Problem(
        document.origin(path),
        f"field {dotted(path)!r} must be {wanted}, not {document.shown(path, error.value)}",
    )


def _explain_too_long(error: _SchemaError, document: Document) -> Iterator[Problem]:
    path = error.path
    yield Problem(
        document.origin(path),
        f"field {dotted(path)!r} is {len(error.value)} characters long; "
        f"shorten it to at most {error.expected}",
    )


def _explain_generic(error: _SchemaError, document: Document) -> Iterator[Problem]:
    path = error.path
    yield Problem(document.origin(path), f"field {dotted(path)!r}: {error.message}")


def _bad_key(error: _SchemaError, document: Document) -> Problem:
    path, key = error.path, error.value
    title = error.schema.get("title", "a valid key")
    return Problem(
        document.origin((*path, key)),
        f"key {key!r} in {dotted(path)!r} must be {title}; rename it",
    )


_Explainer = Callable[[_SchemaError, Document], Iterator[Problem]]
_EXPLAINERS: dict[str, _Explainer] = {
    "additionalProperties": _explain_unknown_fields,
    "required": _explain_missing,
    "type": _explain_type,
    "pattern": _explain_with_title,
    "anyOf": _explain_with_title,
    "oneOf": _explain_with_title,
    "enum": _explain_with_title,
    "minLength": _explain_with_title,
    "maxLength": _explain_too_long,
}
