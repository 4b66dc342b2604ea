"""The image build, top to bottom. Each step is its own module; this file only says
in which order they run and where their results go."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from composer.build import bundle, disk, esp, filesystems, finalize, manifest, overlay, render, unpack as stage
from composer.build.bootstrap import bootstrap, remember_root_size, remembered_root_size
from composer.build.runtime.containers import install_containers
from composer.definition.load import definition_digest, load_definition
from composer.build.runtime.dockertls import install_tls
from composer.build.runtime.engine import start_engine_on_demand
from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition
from composer.build.partitions import MIB, plan_disk, stable_uuid
from composer.core.paths import PROJECT_ROOT, build_root
from composer.core.progress import Progress
from composer.build.runtime.provisioning import bake_config

FIRST_SLOT = "a"


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


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the last commit of this checkout, else 0."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "log", "-1", "--format=%ct"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return int(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0


def _check_fits(
    defn: ImageDefinition, field_name: str, needed: int, available: int, what: str
) -> None:
    if needed > available:
        suggestion = -(-needed * 5 // 4 // MIB)  # a quarter more, rounded up to MiB
        raise KeelError(
            f"{defn.origin(f'partitions.{field_name}')}: {what} needs {needed / MIB:.1f} MiB "
            f"but partitions.{field_name} is {available // MIB} MiB",
            hint=f"set partitions.{field_name} to at least {suggestion}MiB",
        )


def build_image(
    definition: Path, *, out_dir: Path | None = None, quiet: bool = False, keep_work: bool = False
) -> BuildResult:
    progress = Progress(quiet=quiet)
    with progress.step("load definition"):
        defn = load_definition(definition)
        digest = definition_digest(defn)
        # Refuse a root slot too small for this package set before any slow work, when
        # an earlier build of the same packages tells how big the root image gets.
        known_root_size = remembered_root_size(defn)
        if known_root_size is not None:
            _check_fits(defn, "root", known_root_size, defn.partitions.root, "the root filesystem")
    out = out_dir or build_root() / defn.name / defn.version
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    epoch = source_date_epoch()
    plan = plan_disk(defn.partitions, defn.name, defn.version)

    with progress.step("bootstrap root from Debian packages (mmdebstrap)"):
        root_tar = bootstrap(defn, work, progress)
    with progress.step("unpack root tree"):
        tree = stage.unpack(root_tar.tarball, work / "root")
    with progress.step("render templates"):
        render.render_templates(defn, tree)
    with progress.step("apply overlays"):
        overlay.apply_overlays(defn, tree)
    with progress.step("runtime: provisioning config, containers, Docker TLS"):
        bake_config(defn, tree)
        install_containers(defn, tree)
        install_tls(defn, tree, out / "docker-tls")
        start_engine_on_demand(defn, tree)
    with progress.step("finalize tree"):
        final = finalize.finalize(defn, tree, work)

    payload_dir = out / "payload"
    payload_dir.mkdir(parents=True, exist_ok=True)
    with progress.step("make root filesystem (erofs)"):
        root_img = filesystems.make_erofs(
            tree,
            payload_dir / "root.erofs",
            epoch=epoch,
            fs_uuid=stable_uuid(defn.name, defn.version, "root-fs"),
        )
        remember_root_size(defn, root_img.stat().st_size)
        _check_fits(
            defn, "root", root_img.stat().st_size, defn.partitions.root, "the root filesystem"
        )
        shutil.copyfile(final.kernel, payload_dir / "vmlinuz")
        shutil.copyfile(final.initrd, payload_dir / "initrd.img")
    with progress.step("make ESP (vfat, systemd-boot)"):
        esp_tree = esp.populate_esp(
            defn, tree, work / "esp", slot=FIRST_SLOT, kernel=final.kernel, initrd=final.initrd
        )
        # Room for the other slot's kernel and initrd during an update, plus FAT overhead.
        boot_files = final.kernel.stat().st_size + final.initrd.stat().st_size
        _check_fits(
            defn,
            "esp",
            esp.tree_size(esp_tree) + boot_files + 8 * MIB,
            defn.partitions.esp,
            "the ESP (two slots' kernel and initrd)",
        )
        esp_img = filesystems.make_vfat(
            esp_tree,
            work / "esp.vfat",
            size=defn.partitions.esp,
            label="esp",
            volume_id=stable_uuid(defn.name, defn.version, "esp-fs")[:8],
            epoch=epoch,
        )
    with progress.step("make var filesystem (ext4)"):
        _check_fits(
            defn,
            "var",
            esp.tree_size(final.var_seed) * 2 + 32 * MIB,
            defn.partitions.var,
            "the var partition's initial content",
        )
        var_img = filesystems.make_ext4(
            final.var_seed,
            work / "var.ext4",
            size=defn.partitions.var,
            label="var",
            fs_uuid=stable_uuid(defn.name, defn.version, "var-fs"),
            epoch=epoch,
        )
    with progress.step("assemble disk (GPT)"):
        raw = disk.assemble(
            plan, {"esp": esp_img, "root-a": root_img, "var": var_img}, out / "disk.raw"
        )
    with progress.step("convert to qcow2"):
        qcow2 = disk.convert_to_qcow2(raw, out / "disk.qcow2")
    with progress.step("write payload and manifest"):
        payload_files = {
            "root": root_img,
            "kernel": payload_dir / "vmlinuz",
            "initrd": payload_dir / "initrd.img",
        }
        payload = manifest.payload_metadata(defn, final.kernel_version, payload_files)
        manifest.write_json(payload_dir / "payload.json", payload)
        data = manifest.build_manifest(
            defn,
            definition_sha256=digest,
            epoch=epoch,
            plan=plan,
            filesystems=[
                manifest.FilesystemImage("esp", "vfat", esp_img),
                manifest.FilesystemImage("root-a", "erofs", root_img),
                manifest.FilesystemImage("var", "ext4", var_img),
            ],
            kernel_version=final.kernel_version,
            packages=final.packages,
            payload=payload,
        )
        manifest_path = manifest.write_json(out / "manifest.json", data)
    with progress.step("write update bundle"):
        bundle_path = bundle.write_bundle(payload_dir, out / "bundle")
    if not keep_work:
        shutil.rmtree(work)

    artifacts = tuple(
        Artifact(
            str(p.relative_to(out)),
            p,
            p.stat().st_size,
            manifest.sha256_file(p),
        )
        for p in (
            raw,
            qcow2,
            root_img,
            payload_dir / "vmlinuz",
            payload_dir / "initrd.img",
            manifest_path,
            bundle_path,
        )
    )
    return BuildResult(
        out, manifest_path, artifacts, root_tar.cached, progress.timings, progress.elapsed()
    )
