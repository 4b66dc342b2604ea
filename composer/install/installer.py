"""`keel install`, top to bottom: check everything, then write, sync, grow, read back,
and put the config on the ESP.

Nothing is written until the config (if any) has been validated exactly as `keel
config check` does and the target has passed every check of target.py. Once writing
starts, a failure leaves a target that is not a Keel disk yet; running the install
again (with --force, since it now has partitions) starts over."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from composer.core.progress import Progress
from composer.install.espconfig import place_config
from composer.install.image import SourceImage, load_image
from composer.install.target import Target, check_target
from composer.install.verify import verify_partitions
from composer.install.write import Written, grow_to_size, sync, write_image
from composer.provisioning.check import CheckedConfig, check_config_file
from hostd.formats.bootentry import ESP_CONFIG
from hostd.ignition.blockdev import Machine


@dataclass(frozen=True)
class InstallRequest:
    image: Path  # an artifact folder
    to: Path
    size: int | None = None  # for a file target: its size (default: the image's)
    config: Path | None = None  # Butane or Ignition
    force: bool = False


@dataclass(frozen=True)
class InstallResult:
    image: SourceImage
    target: Target
    written: Written
    verified: tuple[str, ...]  # partition labels
    config: CheckedConfig | None
    seconds: float


def install(
    request: InstallRequest, progress: Progress, machine: Machine | None = None
) -> InstallResult:
    started = time.monotonic()
    with progress.step("check the image, the config and the target"):
        image = load_image(request.image)
        config = check_config_file(request.config) if request.config else None
        target = check_target(
            request.to, image, size=request.size, force=request.force, machine=machine
        )
    with progress.step(f"write {image.raw} to {target.path}"):
        written = write_image(image, target, progress)
    with progress.step("extend to the target's size and move the GPT backup header"):
        grow_to_size(image, target)
    with progress.step("read back and verify every written partition"):
        verified = verify_partitions(image, target, progress)
    if config is not None:
        with progress.step(f"put the {config.kind} config on the ESP as {ESP_CONFIG}"):
            place_config(target.path, image.partition("esp"), config.ignition)
            sync(target)
    return InstallResult(
        image, target, written, tuple(verified), config, time.monotonic() - started
    )
