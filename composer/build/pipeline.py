"""The image build, top to bottom: every step in the order it runs.

Each step is `step(ctx)` in the module of its phase: it reads the definition and the
results of earlier steps from the build context and records its own there. Paths of
intermediate files are properties of the context, so no step wires them by hand."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from composer.build import (
    agent,
    bootstrap,
    bundle,
    bytecode,
    capacity,
    debugshell,
    disk,
    esp,
    filesystems,
    finalize,
    growvar,
    manifest,
    overlay,
    presets,
    privatekeys,
    render,
    scratch,
    toolstree,
    trust,
    uki,
    unpack,
)
from composer.build.context import BuildContext, source_date_epoch
from composer.build.partitions import plan_disk
from composer.build.runtime import containers, dockertls, engine, provisioning
from composer.core.errors import KeelError
from composer.core.paths import build_root
from composer.core.progress import Progress
from composer.definition.load import definition_digest, load_definition
from composer.definition.model import ImageDefinition
from composer.publish import secureboot
from composer.publish.secureboot import SecureBootKeys

Step = Callable[[BuildContext], None]

Lane = tuple[tuple[str, Step], ...]

# The build: stages in order. A stage's lanes run side by side, each lane's steps in
# order; no lane reads what another lane of its stage writes, so none waits on
# another (issue 18: on two cores, the bundle's zstd overlaps the qcow2 conversion).
STAGES: tuple[tuple[Lane, ...], ...] = (
    (
        (("bootstrap root from Debian packages (mmdebstrap)", bootstrap.step),),
        (("tools tree (erofs-utils from Debian 13)", toolstree.step),),
    ),
    (
        (
            ("unpack root tree", unpack.step),
            ("render templates", render.step),
            ("apply overlays", overlay.step),
            ("debug shell (test images only)", debugshell.step),
            ("let var grow on a bigger disk (repart.d)", growvar.step),
            ("bake provisioning config", provisioning.step),
            ("install containers", containers.step),
            ("Docker TLS endpoint", dockertls.step),
            ("start the engine on demand", engine.step),
            ("pin unit enablement for first boot", presets.step),
            ("install hostd", agent.step),
            ("compile Python bytecode", bytecode.step),
            ("bake update policy and trust root", trust.step),
            ("finalize tree", finalize.step),
            ("check that no private key is in the image", privatekeys.step),
            ("make root filesystem (erofs)", filesystems.root_step),
            ("make unified kernel image (systemd-stub)", uki.step),
            ("make ESP (vfat, systemd-boot)", esp.step),
            ("make var filesystem (ext4)", filesystems.var_step),
        ),
    ),
    (
        (
            ("assemble disk (GPT)", disk.assemble_step),
            ("convert to qcow2", disk.qcow2_step),
            ("checksum the disk images", disk.checksum_step),
        ),
        (
            ("write payload and manifest", manifest.step),
            ("write update bundle", bundle.step),
        ),
    ),
)


def all_steps() -> list[tuple[str, Step]]:
    return [step for stage in STAGES for lane in stage for step in lane]


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    manifest: Path
    artifacts: tuple[Artifact, ...]
    cached_packages: bool
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def build_image(
    definition: Path,
    *,
    out_dir: Path | None = None,
    quiet: bool = False,
    keep_work: bool = False,
    keys: Path | None = None,
) -> BuildResult:
    """Build the image; keys is the folder `keel keygen` wrote (its Secure Boot keys
    sign the boot chain; its root.json is the trust root, see composer/build/cli.py)."""
    progress = Progress(quiet=quiet)
    with progress.step("load definition"):
        ctx = prepare(definition, out_dir, progress, keys)
    try:
        for stage in STAGES:
            run_stage(stage, ctx)
    finally:
        if keep_work:
            progress.say(f"    staging tree kept in {ctx.work}")
        else:
            shutil.rmtree(ctx.work, ignore_errors=True)
    return BuildResult(
        ctx.out,
        ctx.manifest,
        _artifacts(ctx),
        ctx.packages_from_cache,
        progress.timings,
        progress.elapsed(),
    )


def run_stage(lanes: tuple[Lane, ...], ctx: BuildContext) -> None:
    if len(lanes) == 1:
        run_lane(lanes[0], ctx)
        return
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        running = [pool.submit(run_lane, lane, ctx) for lane in lanes]
    for lane in running:
        lane.result()  # the first lane's error, if any, once all have stopped


def run_lane(steps: Lane, ctx: BuildContext) -> None:
    for title, step in steps:
        with ctx.progress.step(title):
            step(ctx)


def prepare(
    definition: Path, out_dir: Path | None, progress: Progress, keys: Path | None = None
) -> BuildContext:
    """Load and check the definition and the keys, then give the build a fresh work
    folder (last: nothing after it may fail before the build's cleanup is armed)."""
    defn = load_definition(definition)
    capacity.check_remembered_root(defn)
    secure_boot_keys = signing_keys(defn, keys)
    out = out_dir or build_root() / defn.name / defn.version
    ctx = BuildContext(
        definition=defn,
        definition_sha256=definition_digest(defn),
        out=out,
        epoch=source_date_epoch(),
        disk=plan_disk(defn.partitions, defn.name, defn.version),
        progress=progress,
        secure_boot_keys=secure_boot_keys,
        work=scratch.make_work_folder(out),
    )
    return ctx


def signing_keys(defn: ImageDefinition, keys: Path | None) -> SecureBootKeys | None:
    """The Secure Boot keys this build signs with, as boot.secure_boot decides (unset:
    sign when the key folder has them)."""
    wanted = defn.boot.secure_boot
    found = secureboot.load(keys) if keys is not None and wanted is not False else None
    if wanted and found is None:
        where = f"{keys} has no {secureboot.FOLDER}/ folder" if keys else "no --keys folder given"
        raise KeelError(
            f"{defn.source}: boot.secure_boot is true, but {where}",
            hint="make the keys with `keel keygen --out DIR --secure-boot`, then "
            "`keel build --keys DIR`",
        )
    if found is not None and not defn.boot.verity:
        raise KeelError(
            f"{defn.source}: Secure Boot keys were given but boot.verity is false: a signed "
            "boot chain would start an unverified root",
            hint="set boot.verity to true, or boot.secure_boot to false",
        )
    return found


def _artifacts(ctx: BuildContext) -> tuple[Artifact, ...]:
    files = (
        ctx.disk_raw,
        ctx.disk_qcow2,
        ctx.root_image,
        ctx.uki,
        ctx.manifest,
        ctx.bundle,
    )
    return tuple(
        Artifact(str(p.relative_to(ctx.out)), p, p.stat().st_size, manifest.sha256_file(p))
        for p in files
    )
