"""How var grows on a disk bigger than the image: the build writes one systemd-repart
definition into the image, and the host's grow unit (hostd/growvar.py) reads it back.

The definition names var by its GPT type (systemd-repart matches existing partitions
by type; the root slots and the ESP have no definition, so repart leaves them where
they are) and carries the image definition's cap (partitions.var_max) as
SizeMaxBytes=. It lives in Keel's own folder, not in /usr/lib/repart.d, so the stock
systemd-repart.service (which scans repart.d folders, /etc's among them) never acts
on it: only the grow unit runs repart, on the one disk it checked."""

from __future__ import annotations

# The Discoverable Partitions Specification's "Variable data" type (/var).
VAR_TYPE = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"
# Relative to the image's root.
REPART_DIR = "usr/lib/keel/repart.d"
VAR_DEFINITION = f"{REPART_DIR}/50-var.conf"


def var_definition(cap: int) -> str:
    """The repart.d file of var; cap 0 means no cap (var fills the disk)."""
    lines = [
        "# Written by Keel's build: grow the var partition into the free space after it.",
        "# Read by keel-grow-var.service (hostd/growvar.py); only Type= matches, so",
        "# systemd-repart never creates, moves or shrinks a partition with this file.",
        "[Partition]",
        "Type=var",
    ]
    if cap:
        lines.append(f"SizeMaxBytes={cap}")
    return "\n".join(lines) + "\n"


def definition_cap(text: str) -> int:
    """The SizeMaxBytes= of a var definition in bytes, 0 when it has none."""
    cap = 0
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "SizeMaxBytes":
            cap = int(value.strip())
    if cap < 0:
        raise ValueError(f"SizeMaxBytes={cap} is negative")
    return cap
