"""Which Butane variants and versions Keel reads, and what each becomes.

Checked against butane's source (config/<variant>/v<version>/translate.go imports the
Ignition types it emits; schema.go embeds base/v0_N, which decides the fields):
fcos 1.0.0-1.6.0 emit Ignition 3.0.0, 3.1.0, 3.2.0, 3.2.0, 3.3.0, 3.4.0, 3.5.0;
flatcar 1.0.0 and 1.1.0 emit 3.3.0 and 3.4.0. Keel's own variant is fcos 1.5.0's
schema under Keel's name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    ignition: str  # the Ignition spec version written to ignition.version
    base: int  # butane's base/v0_<base> schema: which fields exist
    # fcos 1.6.0's own checks (config/fcos/v1_6/validate.go): with_mount_unit only
    # below /etc or /var, and a warning for partitions given by label alone.
    fcos_storage_checks: bool = False


SPECS: dict[tuple[str, str], Spec] = {
    ("fcos", "1.0.0"): Spec("3.0.0", 1),
    ("fcos", "1.1.0"): Spec("3.1.0", 2),
    ("fcos", "1.2.0"): Spec("3.2.0", 3),
    ("fcos", "1.3.0"): Spec("3.2.0", 3),
    ("fcos", "1.4.0"): Spec("3.3.0", 4),
    ("fcos", "1.5.0"): Spec("3.4.0", 5),
    ("fcos", "1.6.0"): Spec("3.5.0", 6, fcos_storage_checks=True),
    ("flatcar", "1.0.0"): Spec("3.3.0", 4),
    ("flatcar", "1.1.0"): Spec("3.4.0", 5),
    ("keel", "1.0.0"): Spec("3.4.0", 5),
}

IGNITION_FOR = {key: spec.ignition for key, spec in SPECS.items()}


def supported() -> str:
    """'fcos 1.0.0-1.6.0, flatcar 1.0.0-1.1.0, keel 1.0.0', for messages."""
    ranges: dict[str, list[str]] = {}
    for variant, version in SPECS:
        ranges.setdefault(variant, []).append(version)
    return ", ".join(
        f"{v} {vs[0]}" if len(vs) == 1 else f"{v} {vs[0]}-{vs[-1]}" for v, vs in ranges.items()
    )
