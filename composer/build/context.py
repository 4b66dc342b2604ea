"""What every build step works on: the definition, where things go, and the results of
earlier steps.

The definition is frozen; the context is the one mutable thing of a build. Where a
step's output is a file, its path is a property here, so no step wires paths by hand
and the pipeline never passes them along."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from composer.build.bundle import bundle_file_name
from composer.build.finalize import Finalized
from composer.build.partitions import DiskPlan
from composer.build.toolstree import ToolsTree
from composer.core.paths import PROJECT_ROOT
from composer.core.progress import Progress
from composer.definition.model import ImageDefinition
from composer.publish.secureboot import SecureBootKeys
from hostd.formats.verity import Verity

# A new image boots slot a; slot b stays empty until the first update.
FIRST_SLOT = "a"


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


@dataclass
class BuildContext:
    definition: ImageDefinition
    definition_sha256: str
    out: Path
    epoch: int
    disk: DiskPlan
    progress: Progress
    # Scratch space (composer/build/scratch.py), removed after the build unless
    # --keep-work.
    work: Path
    # Set by the steps that learn them.
    packages_from_cache: bool = False
    # The root image's dm-verity root hash and layout (boot.verity), set by root_step.
    root_verity: Verity | None = None
    # The owner's Secure Boot keys when the build signs the boot chain (boot.secure_boot).
    secure_boot_keys: SecureBootKeys | None = None
    # The tools tree (composer/build/toolstree.py), set by its step beside the bootstrap.
    tools: ToolsTree | None = None
    _finalized: Finalized | None = None

    @property
    def kernel_cmdline(self) -> tuple[str, ...]:
        """The definition's kernel arguments, then keel.verity= once the root image
        has its tree: the command line of the image's loader entries."""
        verity_words = (self.root_verity.kernel_argument(),) if self.root_verity else ()
        return (*self.definition.kernel.cmdline, *verity_words)

    @property
    def finalized(self) -> Finalized:
        """The finalize step's result: kernel, initrd, var seed, package list."""
        if self._finalized is None:
            raise AssertionError("a step needs the finalized tree before finalize ran")
        return self._finalized

    @finalized.setter
    def finalized(self, value: Finalized) -> None:
        self._finalized = value

    @property
    def tree(self) -> Path:
        return self.work / "root"

    @property
    def esp_tree(self) -> Path:
        return self.work / "esp"

    @property
    def esp_image(self) -> Path:
        return self.work / "esp.vfat"

    @property
    def var_image(self) -> Path:
        return self.work / "var.ext4"

    # The slot payload: what an update writes into a slot and onto the ESP.
    @property
    def payload_dir(self) -> Path:
        return self.out / "payload"

    @property
    def root_image(self) -> Path:
        return self.payload_dir / "root.erofs"

    @property
    def uki(self) -> Path:
        """The unified kernel image: stub, kernel, initrd and command line, signed for
        Secure Boot when the build has the keys."""
        return self.payload_dir / "keel.efi"

    @property
    def payload_json(self) -> Path:
        return self.payload_dir / "payload.json"

    # What a user takes away.
    @property
    def disk_raw(self) -> Path:
        return self.out / "disk.raw"

    @property
    def disk_qcow2(self) -> Path:
        return self.out / "disk.qcow2"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    @property
    def bundle_dir(self) -> Path:
        return self.out / "bundle"

    @property
    def bundle(self) -> Path:
        defn = self.definition
        return self.bundle_dir / bundle_file_name(defn.name, defn.version, defn.debian.architecture)

    @property
    def secure_boot_dir(self) -> Path:
        """The certificates a machine's firmware is enrolled with (signed builds only)."""
        return self.out / "secure-boot"

    @property
    def docker_tls_client_dir(self) -> Path:
        return self.out / "docker-tls"
