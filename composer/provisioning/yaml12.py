"""Butane's YAML, read the way butane's parser (go-yaml v3) reads it, and safely.

PyYAML alone resolves plain scalars by YAML 1.1 (`no` is False, `010` is 8) and
builds Python objects with no line numbers. Here PyYAML only yields events; this
module builds the tree itself so that it can keep each node's line, refuse duplicate
keys, bound nesting depth and alias expansion (an alias bomb is refused before
anything is expanded), and resolve plain scalars by go-yaml v3's YAML 1.2 rules
(true/false only; ints as Go literals, so `0644` is still octal like in butane)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024  # a Butane file is small; big contents come from local files
MAX_DEPTH = 64  # Butane's schema is 8 levels deep
MAX_NODES = 100_000  # nodes after alias expansion (what a consumer would walk)


class YamlError(ValueError):
    """Problems, each already prefixed with the line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Scalar:
    value: Any
    kind: str  # str, int, float, bool, null, timestamp
    text: str
    line: int
    size: int = 1


@dataclass
class Mapping:
    line: int
    items: list[tuple[str, int, Node]] = field(default_factory=list)  # key, key line, value
    size: int = 1


@dataclass
class Sequence:
    line: int
    items: list[Node] = field(default_factory=list)
    size: int = 1


Node = Scalar | Mapping | Sequence

_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_SPECIAL_FLOAT = {".nan": math.nan, ".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO]?[0-7]*|0[bB][01]+|[1-9][0-9]*)")
_STR_TAG = "tag:yaml.org,2002:str"


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64) (then ParseUint), after go-yaml drops underscores."""
    plain = text.replace("_", "")
    if not _GO_INT.fullmatch(plain):
        return None
    sign = -1 if plain[0] == "-" else 1
    digits = plain.lstrip("+-")
    lower = digits.lower()
    if lower.startswith("0x"):
        value = int(lower[2:], 16)
    elif lower.startswith("0b"):
        value = int(lower[2:], 2)
    elif lower.startswith("0o"):
        value = int(lower[2:], 8)
    elif lower.startswith("0") and len(lower) > 1:
        value = int(lower[1:], 8)  # Go's base 0: a leading zero is octal
    else:
        value = int(lower)
    value *= sign
    return value if -(2**63) <= value < 2**64 else None


def resolve(text: str) -> tuple[str, Any]:
    """The (kind, value) of a plain scalar, as go-yaml v3 resolves it."""
    if text in _NULL:
        return "null", None
    if text in _BOOL:
        return "bool", _BOOL[text]
    if text.lower() in _SPECIAL_FLOAT and text[-3:] in ("nan", "NaN", "NAN", "inf", "Inf", "INF"):
        return "float", _SPECIAL_FLOAT[text.lower()]
    head = text[0]
    if head == "." or head in "+-" or head.isdigit():
        if head.isdigit() and _TIMESTAMP.fullmatch(text):
            return "timestamp", text
        number = _go_int(text) if head != "." else None
        if number is not None:
            return "int", number
        plain = text.replace("_", "") if head != "." else text
        if _FLOAT.fullmatch(plain):
            return "float", float(plain)
    return "str", text


def decode(data: bytes, name: str) -> str:
    """UTF-8 text, or a YamlError that says what the bytes are instead."""
    if len(data) > MAX_BYTES:
        raise YamlError(
            [
                f"{name}: {len(data)} bytes, more than a Butane config may have "
                f"({MAX_BYTES}); put large contents in files (contents.local)"
            ]
        )
    if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") or data[:2] in (
        b"\xff\xfe",
        b"\xfe\xff",
    ):
        raise YamlError(
            [f"{name}: is UTF-16 or UTF-32 (it starts with a byte order mark); save it as UTF-8"]
        )
    if b"\x00" in data:
        at = data.index(b"\x00")
        if data[1:64:2].count(0) > 8 or data[0:64:2].count(0) > 8:
            raise YamlError(
                [f"{name}: looks like UTF-16 (every other byte is NUL); save it as UTF-8"]
            )
        line = data.count(b"\n", 0, at) + 1
        raise YamlError([f"{name}:{line}: a NUL byte; a Butane config is text"])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark, as some editors write it
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        bad = data[error.start : error.start + 3]
        what = (
            "a UTF-16 surrogate encoded in UTF-8"
            if bad[:1] == b"\xed" and bad[1:2] >= b"\xa0"
            else f"byte 0x{data[error.start]:02x}"
        )
        raise YamlError([f"{name}:{line}: not UTF-8 ({what}); save the file as UTF-8"]) from None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "a lone UTF-16 surrogate (not a character)"
    return None


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.problems: list[str] = []
        self.anchors: dict[str, Node] = {}
        self.stack: list[tuple[Node, str | None]] = []
        self.pending_key: list[tuple[str, int] | None] = []
        self.walked = 0  # nodes, counting each alias as the whole tree it stands for
        self.root: Node | None = None

    def fail(self, line: int, message: str) -> None:
        self.problems.append(f"{self.name}:{line}: {message}")

    def budget(self, size: int, line: int) -> None:
        self.walked += size
        if self.walked > MAX_NODES:
            raise YamlError(
                [
                    f"{self.name}:{line}: more than {MAX_NODES} nodes once aliases "
                    "are expanded (an alias bomb?)"
                ]
            )

    def add(self, node: Node, line: int) -> None:
        if not self.stack:
            self.root = node
            return
        parent, _ = self.stack[-1]
        if isinstance(parent, Sequence):
            parent.items.append(node)
            parent.size += node.size
            return
        assert isinstance(parent, Mapping)
        key = self.pending_key[-1]
        if key is None:
            if not isinstance(node, Scalar):
                self.fail(line, "a mapping key must be a plain string")
                self.pending_key[-1] = ("", line)
                return
            if any(k == node.text for k, _, _ in parent.items):
                self.fail(line, f"duplicate key {node.text!r}")
            self.pending_key[-1] = (node.text, line)
            return
        parent.items.append((key[0], key[1], node))
        parent.size += node.size
        self.pending_key[-1] = None

    def scalar(self, event: yaml.ScalarEvent) -> Scalar:
        line = event.start_mark.line + 1 if event.start_mark else 0
        text = event.value
        bad = _bad_text(text)
        if bad:
            self.fail(line, f"{bad} in {text[:40]!r}; not allowed in a Butane config")
        if event.tag not in (None, "!", _STR_TAG):
            self.fail(line, f"YAML tag {event.tag!r} is not supported; remove it")
        if event.style is None and event.tag is None:
            kind, value = resolve(text)
            return Scalar(value, kind, text, line)
        return Scalar(text, "str", text, line)


def load(text: str, name: str) -> Node | None:
    """The one YAML document in text as a tree; YamlError lists every problem found."""
    bad = _bad_text(text)
    if bad:
        at = next(i for i, c in enumerate(text) if c == "\x00" or "\ud800" <= c <= "\udfff")
        raise YamlError(
            [f"{name}:{text.count(chr(10), 0, at) + 1}: {bad}; a Butane config is text"]
        )
    b = _Builder(name)
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.BaseLoader):
            line = event.start_mark.line + 1 if event.start_mark else 0
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    b.fail(line, "a second YAML document; a Butane config is one document")
                    break
            elif isinstance(event, yaml.AliasEvent):
                target = b.anchors.get(event.anchor or "")
                if target is None:
                    b.fail(line, f"alias *{event.anchor} names no anchor before it")
                    target = Scalar(None, "null", "", line)
                b.budget(target.size, line)
                b.add(target, line)
            elif isinstance(event, yaml.ScalarEvent):
                b.budget(1, line)
                node: Node = b.scalar(event)
                if event.anchor:
                    b.anchors[event.anchor] = node
                b.add(node, line)
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                b.budget(1, line)
                if len(b.stack) >= MAX_DEPTH:
                    raise YamlError([f"{name}:{line}: nested more than {MAX_DEPTH} levels deep"])
                if event.tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                    b.fail(line, f"YAML tag {event.tag!r} is not supported; remove it")
                container: Node = (
                    Mapping(line) if isinstance(event, yaml.MappingStartEvent) else Sequence(line)
                )
                b.stack.append((container, event.anchor))
                b.pending_key.append(None)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done, anchor = b.stack.pop()
                b.pending_key.pop()
                if anchor:
                    b.anchors[anchor] = done  # only now: a recursive alias stays undefined
                b.add(done, done.line)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        b.problems.append(f"{where}: not valid YAML: {error.problem or error.context}")
    except yaml.YAMLError as error:  # ReaderError: a character YAML does not allow
        b.problems.append(f"{name}: not valid YAML: {error}")
    if b.problems:
        raise YamlError(b.problems)
    return b.root
