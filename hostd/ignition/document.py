"""Raw config bytes -> a JSON document, refusing hostile input with a ConfigError
instead of crashing later: size, encoding (BOM, UTF-16/32, invalid UTF-8), nesting
depth, NaN and huge numbers, duplicate keys, NUL bytes and lone surrogates (which
`\\u` escapes can carry even in valid UTF-8, and which crash os and subprocess calls)."""

from __future__ import annotations

import json
from typing import Any

from hostd.ignition.errors import ConfigError

MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Ignition's deepest field is 8 levels down; anything far deeper is not a config.
MAX_DEPTH = 32
_BOMS = {
    b"\xef\xbb\xbf": "a UTF-8 byte order mark",
    b"\xff\xfe": "a UTF-16 byte order mark",
    b"\xfe\xff": "a UTF-16 byte order mark",
}
_SAVE_AS = "save the config as UTF-8 without a byte order mark"


def _text(raw: bytes) -> str:
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the config is {len(raw)} bytes; at most {MAX_CONFIG_BYTES} are accepted"
        )
    for bom, what in _BOMS.items():
        if raw.startswith(bom):
            raise ConfigError(f"the config starts with {what}; {_SAVE_AS}")
    if b"\x00" in raw[:4]:  # JSON text starts with ASCII: NULs there mean UTF-16/32
        raise ConfigError(f"the config looks like UTF-16 or UTF-32 text; {_SAVE_AS}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the config is not valid UTF-8 (byte {error.start}); {_SAVE_AS}"
        ) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # Go's decoder would silently keep the last one
            raise ConfigError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ConfigError(f"{name} is not a JSON number")


def _check_depth(text: str) -> None:
    """Refuse deep nesting before the recursive parser sees it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"the config nests deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "a NUL character"
    if any("\ud800" <= char <= "\udfff" for char in value):
        return "a lone UTF-16 surrogate (not a character)"
    return None


def _check_strings(document: Any) -> None:
    """Every key and string value is text the OS can take (iterative: depth is known)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        shown, value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                child_shown = f"{shown}.{key}" if shown else key
                problem = _bad_text(key)
                if problem:
                    raise ConfigError(f"a key in {shown or 'the config'!r} holds {problem}")
                stack.append((child_shown, child))
        elif isinstance(value, list):
            stack.extend((f"{shown}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                raise ConfigError(f"field '{shown}' holds {problem}")


def load(raw: bytes) -> dict[str, Any]:
    """The config as a JSON object, or ConfigError saying what is wrong with the bytes."""
    if not isinstance(raw, (bytes, bytearray)):
        raise ConfigError("the config must be bytes")
    text = _text(bytes(raw))
    if "\x00" in text:
        raise ConfigError("the config holds a NUL byte; it is not JSON text")
    _check_depth(text)
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON: {error}") from None
    except (ValueError, RecursionError) as error:  # e.g. a 5000-digit number
        raise ConfigError(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError("the config must be a JSON object")
    _check_strings(document)
    return document
