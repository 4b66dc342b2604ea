"""Read a definition's YAML into plain data that remembers where each value was written
(file and line), refusing what YAML allows but a definition should not contain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from composer.core.errors import KeelError
from composer.definition.model import Origin
from composer.definition.problems import (
    DOCS_HINT,
    DocPath,
    describe_path,
    describe_value,
    describe_where,
)

_YAML_TAGS_KEPT_AS_TEXT = {"tag:yaml.org,2002:timestamp"}
_YAML_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}


@dataclass(frozen=True)
class Node:
    """A YAML value that remembers where it was written; containers hold Nodes."""

    value: Any
    origin: Origin
    # The scalar as written ("1.0", "0644"), for messages: the parsed value loses it.
    text: str | None = None


def read_yaml(path: Path, display: Path) -> Node:
    """The top-level mapping of one file; display is how messages name the file."""
    text = _read_text(path, display)
    loader = yaml.SafeLoader(text)
    try:
        root = _top_level(loader.get_single_node(), display)
        return _NodeReader(loader, display).read(root, ())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        hint = None
        if error.context and error.context_mark:
            hint = f"{error.context} (line {error.context_mark.line + 1})"
        raise KeelError(f"{display}:{line}: invalid YAML: {error.problem}", hint=hint) from error
    finally:
        loader.dispose()


def _read_text(path: Path, display: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise KeelError(
            f"{display}: no such image definition",
            hint=f"the definitions are files in {display.parent}/",
        ) from error
    except OSError as error:
        raise KeelError(f"{display}: cannot read the file: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise KeelError(f"{display}: the file is not UTF-8 text ({error.reason})") from error


def _top_level(root: yaml.Node | None, display: Path) -> yaml.MappingNode:
    if root is None:
        raise KeelError(
            f"{display}:1: the file is empty; an image definition is a mapping "
            "with at least 'name', 'version' and 'partitions'",
            hint=DOCS_HINT,
        )
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise KeelError(
            f"{display}:{root.start_mark.line + 1}: the top level is {kind}; it must be "
            "a mapping of fields such as 'name: docker-host'",
            hint=DOCS_HINT,
        )
    return root


class _NodeReader:
    """Turns PyYAML's composed node graph into Nodes, rejecting what YAML allows but a
    definition should not contain (duplicate keys, non-text keys, custom tags)."""

    def __init__(self, loader: yaml.SafeLoader, file: Path) -> None:
        self.loader = loader
        self.file = file
        self.open_nodes: set[int] = set()  # guards against an alias that contains itself

    def origin(self, node: yaml.Node) -> Origin:
        return Origin(self.file, node.start_mark.line + 1)

    def read(self, node: yaml.Node, path: DocPath) -> Node:
        if id(node) in self.open_nodes:
            raise self.error(node, f"{describe_path(path)} refers to itself through an alias")
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.read_mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
                return Node(items, self.origin(node))
            return self.read_scalar(node, path)
        finally:
            self.open_nodes.discard(id(node))

    def read_mapping(self, node: yaml.MappingNode, path: DocPath) -> Node:
        entries: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self.read_key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in entries:
                raise self.error(
                    key_node,
                    f"{describe_path((*path, key))} is written twice "
                    f"(first on line {first_lines[key]}); keep only one",
                )
            value = self.read(value_node, (*path, key))
            # A key's own line is where a reader looks for it, also when its value
            # (a nested mapping or list) starts on the next line.
            entries[key] = Node(value.value, Origin(self.file, line), value.text)
            first_lines[key] = line
        return Node(entries, self.origin(node))

    def read_key(self, key_node: yaml.Node, path: DocPath) -> str:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise self.error(key_node, "YAML merge keys ('<<') are not supported; use 'extends'")
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, f"a key {describe_where(path)} is not plain text")
        key = self.loader.construct_object(key_node)
        if not isinstance(key, str):
            raise self.error(
                key_node,
                f"the key {key_node.value} {describe_where(path)} is read as "
                f"{describe_value(key, key_node.value)}; quote it: "
                f'"{key_node.value}":',
            )
        return key

    def read_scalar(self, node: yaml.Node, path: DocPath) -> Node:
        if node.tag in _YAML_TAGS_KEPT_AS_TEXT:
            # A date is text to every consumer of a definition (and JSON has no dates).
            return Node(node.value, self.origin(node), node.value)
        if node.tag not in _YAML_SCALAR_TAGS:
            raise self.error(node, f"{describe_path(path)} has the unsupported YAML tag {node.tag}")
        return Node(self.loader.construct_object(node), self.origin(node), node.value)

    def error(self, node: yaml.Node, message: str) -> KeelError:
        return KeelError(f"{self.origin(node)}: {message}", hint=DOCS_HINT)


@dataclass(frozen=True)
class Document:
    """Plain data, and where each value in it was written."""

    data: dict[str, Any]
    origins: dict[DocPath, Origin]
    texts: dict[DocPath, str]

    @classmethod
    def from_node(cls, root: Node) -> Document:
        origins: dict[DocPath, Origin] = {}
        texts: dict[DocPath, str] = {}
        data = _to_plain(root, (), origins, texts)
        return cls(data, origins, texts)

    def origin(self, path: Sequence[str | int]) -> Origin:
        """Where path, or the nearest enclosing value, was written."""
        path = tuple(path)
        while path not in self.origins:
            path = path[:-1]
        return self.origins[path]

    def shown(self, path: Sequence[str | int], value: Any) -> str:
        """A value as the user wrote it, for 'not ...' in messages."""
        return describe_value(value, self.texts.get(tuple(path)))

    def next_to_definition(self, path: DocPath, value: str) -> Path | None:
        """A path written relative to the definition file that says it, made absolute;
        None for the empty text that means "none"."""
        if not value:
            return None
        return (self.origin(path).file.parent / value).absolute()


def _to_plain(
    node: Node, path: DocPath, origins: dict[DocPath, Origin], texts: dict[DocPath, str]
) -> Any:
    origins[path] = node.origin
    if isinstance(node.value, dict):
        return {k: _to_plain(v, (*path, k), origins, texts) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [_to_plain(v, (*path, i), origins, texts) for i, v in enumerate(node.value)]
    if node.text is not None:
        texts[path] = node.text
    return node.value
