"""Load an image definition: read the YAML with line numbers, follow `extends`, validate
against the JSON Schema, check what the schema cannot, and build the frozen
ImageDefinition.

Everything here runs before any slow build step, so a mistake in a definition costs
the user a second, not a two-minute bootstrap. Every problem is reported as
"FILE:LINE: what is wrong; what to do", all problems of a file at once.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from composer.core.paths import IMAGES_DIR, OVERLAYS_DIR, TEMPLATES_DIR
from composer.definition.assemble import assemble
from composer.definition.checks import check_resolved
from composer.definition.document import Document
from composer.definition.explain import schema_problems
from composer.definition.extends import read_merged
from composer.definition.model import ImageDefinition
from composer.definition.problems import display, raise_if_any
from composer.definition.schema import full_validator, with_defaults


def load_definition(
    path: Path,
    *,
    templates_dir: Path = TEMPLATES_DIR,
    overlays_dir: Path = OVERLAYS_DIR,
    images_dir: Path = IMAGES_DIR,
) -> ImageDefinition:
    """Read, merge and validate the definition at path; raise KeelError on any mistake."""
    document = Document.from_node(read_merged(path, images_dir))
    raise_if_any(schema_problems(document, full_validator()))
    resolved = with_defaults(copy.deepcopy(document.data))
    raise_if_any(
        check_resolved(resolved, document, templates_dir=templates_dir, overlays_dir=overlays_dir)
    )
    return assemble(resolved, document, source=display(path))


def definition_digest(defn: ImageDefinition) -> str:
    """sha256 of the resolved definition, stable across key order and formatting."""
    canonical = json.dumps(defn.resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
