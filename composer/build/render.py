"""Build step 3: render templates/ into the tree with the definition's variables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from composer.core.errors import KeelError
from composer.core.paths import TEMPLATES_DIR
from composer.core.tree import image_path, resolve_owner, write_file
from composer.definition.model import ImageDefinition

if TYPE_CHECKING:
    from composer.build.context import BuildContext


def template_context(defn: ImageDefinition) -> dict[str, Any]:
    """What a template can use: the definition's variables plus `image`."""
    image = {
        "name": defn.name,
        "version": defn.version,
        "description": defn.description,
        "suite": defn.debian.suite,
        "architecture": defn.debian.architecture,
    }
    return {**defn.variables_dict, "image": image}


def make_environment(templates_dir: Path) -> jinja2.Environment:
    # StrictUndefined: a misspelt variable is an error, not an empty string in /etc.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_templates(
    defn: ImageDefinition, tree: Path, templates_dir: Path = TEMPLATES_DIR
) -> list[str]:
    """Render every template of the definition into tree; returns the targets written."""
    env = make_environment(templates_dir)
    context = template_context(defn)
    written = []
    for index, template in enumerate(defn.templates):
        where = defn.origin(f"templates.{index}.source")
        try:
            text = env.get_template(template.source).render(context)
        except jinja2.UndefinedError as error:
            raise KeelError(
                f"{where}: template '{template.source}' uses an undefined variable: {error}",
                hint="define it under 'variables:' in the image definition",
            ) from None
        except jinja2.TemplateError as error:
            line = getattr(error, "lineno", None)
            at = f" line {line}" if line else ""
            raise KeelError(
                f"{where}: template '{template.source}'{at} cannot be rendered: {error}"
            ) from None
        uid, gid = resolve_owner(tree, template.owner, str(defn.origin(f"templates.{index}")))
        write_file(image_path(tree, template.target), text.encode(), template.mode, uid, gid)
        written.append(template.target)
    return written


def step(ctx: BuildContext) -> None:
    render_templates(ctx.definition, ctx.tree)
