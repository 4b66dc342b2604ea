"""A VM's UEFI variable store with Secure Boot on: the image's PK, KEK and db enrolled
offline, so the firmware refuses to start anything the image owner did not sign.

Offline, with virt-fw-vars (Python package virt-firmware), because an empty store
starts in setup mode, where the firmware starts anything; enrolling from inside the
guest would need a boot of an unsigned tool first."""

from __future__ import annotations

import sys
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.publish.secureboot import FOLDER, SecureBootKeys, load

UNSIGNED_HINT = (
    "build it with `keel build --keys DIR` where DIR holds secure-boot/ "
    "from `keel keygen --secure-boot`"
)


def image_certificates(disk: Path) -> SecureBootKeys:
    """The certificates a build signed for Secure Boot left in secure-boot/ beside its
    disk (only the .crt files and owner.guid: the private keys stay with the owner)."""
    try:
        keys = load(disk.parent, private_keys=False)
    except KeelError as error:
        raise KeelError(error.message, hint=UNSIGNED_HINT) from None
    if keys is None:
        raise KeelError(
            f"{disk} was not signed for Secure Boot: there is no {disk.parent / FOLDER}",
            hint=UNSIGNED_HINT,
        )
    return keys


def write_enrolled_vars(template: Path, keys: SecureBootKeys, output: Path) -> None:
    """output: a copy of the empty store template with keys enrolled and Secure Boot on."""
    guid = keys.owner_guid
    # From this interpreter: virt-firmware is one of Keel's Python dependencies, so it
    # is there even where its console script is not on PATH (a venv not activated).
    argv: list[str | Path] = [
        sys.executable, "-m", "virt.firmware.vars",
        "--loglevel", "warning",  # a failure's stderr tail is then the error itself
        "--input", template,
        "--output", output,
        "--set-pk", guid, keys.certificate("PK"),
        "--add-kek", guid, keys.certificate("KEK"),
        "--add-db", guid, keys.certificate("db"),
        "--secure-boot",  # SecureBootEnable on, CustomMode off: signatures are checked
    ]  # fmt: skip
    commands.run(
        argv,
        hint=f"the certificates in {keys.folder} must be X.509 (PEM or DER); virt-fw-vars "
        "comes with the Python package virt-firmware, which Keel depends on "
        "(`make setup` reinstalls it)",
    )
