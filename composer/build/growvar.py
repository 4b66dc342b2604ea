"""Build step: the systemd-repart definition that lets var grow on a disk bigger than
the image (hostd/formats/growth.py writes it; keel-grow-var.service and
hostd/growvar.py use it on every boot), with the definition's partitions.var_max as
its cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from composer.core.tree import write_file
from hostd.formats.growth import VAR_DEFINITION, var_definition

if TYPE_CHECKING:
    from composer.build.context import BuildContext


def step(ctx: BuildContext) -> None:
    text = var_definition(ctx.definition.partitions.var_max)
    write_file(ctx.tree / VAR_DEFINITION, text.encode(), 0o644, 0, 0)
