"""Follow a definition's `extends` chain and merge it into one document, child over
parent, each value keeping the file and line it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.core.errors import KeelError
from composer.definition.document import Document, Node, read_yaml
from composer.definition.explain import schema_problems
from composer.definition.model import Origin
from composer.definition.problems import display, raise_if_any
from composer.definition.schema import single_file_validator


@dataclass(frozen=True)
class _Link:
    """One file in an extends chain, and where it says 'extends'."""

    file: Path
    extends_origin: Origin


def read_merged(path: Path, images_dir: Path) -> Node:
    """The definition at path merged over every definition it extends; each file is
    checked against the schema on its own, so a mistake names the file that makes it."""
    return _load_with_parents(path, images_dir, chain=())


def _load_with_parents(path: Path, images_dir: Path, chain: tuple[_Link, ...]) -> Node:
    node = read_yaml(path, display(path))
    raise_if_any(schema_problems(Document.from_node(node), single_file_validator()))
    entries: dict[str, Node] = dict(node.value)
    extends = entries.pop("extends", None)
    own = Node(entries, node.origin)
    if extends is None:
        return own
    link = _Link(path.resolve(), extends.origin)
    parent_path = _parent_path(extends.value, path, images_dir)
    _check_no_cycle((*chain, link), parent_path.resolve())
    _check_parent_exists(parent_path, extends, images_dir)
    parent = _load_with_parents(parent_path, images_dir, (*chain, link))
    return _merge(parent, own)


def _parent_path(extends: str, child: Path, images_dir: Path) -> Path:
    if extends.endswith((".yaml", ".yml")):
        return child.parent / extends
    return images_dir / f"{extends}.yaml"


def _check_no_cycle(chain: tuple[_Link, ...], parent: Path) -> None:
    files = [link.file for link in chain]
    if parent not in files:
        return
    start = files.index(parent)
    cycle = [*files[start:], parent]
    names = [f.name for f in cycle]
    if len(set(names)) < len(set(cycle)):  # same file name in two folders: be exact
        names = [str(display(f)) for f in cycle]
    raise KeelError(
        f"{chain[start].extends_origin}: 'extends' makes a cycle: {' -> '.join(names)}; "
        "remove one of these 'extends'"
    )


def _check_parent_exists(parent_path: Path, extends: Node, images_dir: Path) -> None:
    if parent_path.is_file():
        return
    raise KeelError(
        f"{extends.origin}: 'extends' names {extends.value!r}, but "
        f"{display(parent_path)} does not exist; create it or fix 'extends'",
        hint=f"a bare name means {display(images_dir)}/<name>.yaml; a path ending in "
        ".yaml is relative to the file that says 'extends'",
    )


def _merge(parent: Node, child: Node) -> Node:
    """Child over parent: mappings merge, lists extend, anything else the child wins."""
    if isinstance(parent.value, dict) and isinstance(child.value, dict):
        merged = dict(parent.value)
        for key, value in child.value.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return Node(merged, child.origin)
    if isinstance(parent.value, list) and isinstance(child.value, list):
        return Node(_extend(parent.value, child.value), child.origin)
    return child


def _extend(first: list[Node], second: list[Node]) -> list[Node]:
    items = [*first, *second]
    if any(isinstance(item.value, dict | list) for item in items):
        return items
    # A package named by both parent and child is installed once; the type is part of
    # "exact" so that 1 and true stay two different values.
    seen: set[tuple[type, Any]] = set()
    unique = []
    for item in items:
        identity = (type(item.value), item.value)
        if identity not in seen:
            seen.add(identity)
            unique.append(item)
    return unique
