"""Build step: put the filesystem images into one GPT disk image, then qcow2.

sfdisk writes the table into a plain file and dd writes each filesystem at its
offset, so no loop device or root privilege is needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from composer.build import manifest
from composer.build.partitions import DiskPlan, sfdisk_script
from composer.core import commands
from hostd.formats.sizes import MIB

if TYPE_CHECKING:
    from composer.build.context import BuildContext


def assemble(plan: DiskPlan, images: dict[str, Path], output: Path) -> Path:
    output.unlink(missing_ok=True)
    with output.open("wb") as handle:
        handle.truncate(plan.size)
    commands.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", output],
        input=sfdisk_script(plan).encode(),
    )
    for label, image in images.items():
        part = plan.by_label(label)
        # conv=sparse skips zero blocks, so the raw disk stays sparse on the build host.
        commands.run(
            [
                "dd", f"if={image}", f"of={output}", "bs=1M", f"seek={part.start // MIB}",
                "conv=notrunc,sparse", "status=none",
            ]
        )  # fmt: skip
    return output


def convert_to_qcow2(raw: Path, output: Path) -> Path:
    output.unlink(missing_ok=True)
    # zstd compression clusters: several times faster than zlib to write, and QEMU
    # (5.1 and later) reads them natively.
    commands.run(
        [
            "qemu-img", "convert", "-c", "-O", "qcow2",
            "-o", "compression_type=zstd", raw, output,
        ]
    )  # fmt: skip
    return output


def assemble_step(ctx: BuildContext) -> None:
    images = {"esp": ctx.esp_image, "root-a": ctx.root_image, "var": ctx.var_image}
    assemble(ctx.disk, images, ctx.disk_raw)


def qcow2_step(ctx: BuildContext) -> None:
    convert_to_qcow2(ctx.disk_raw, ctx.disk_qcow2)


def checksum_step(ctx: BuildContext) -> None:
    """The disk images' sha256 for the build's summary, in this lane while the other
    compresses the bundle, rather than after both (the raw disk alone takes 1.5 s)."""
    for image in (ctx.disk_raw, ctx.disk_qcow2):
        manifest.sha256_file(image)
