"""One ed25519 key pair per VM, kept in the VM folder.

Generated in-process with `cryptography` (already required by paramiko) so that no
ssh-keygen binary is needed on build machines or CI."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ensure_key(private_key: Path, comment: str) -> str:
    """Create the key pair unless it exists; return the public key line."""
    public_key = private_key.with_name(private_key.name + ".pub")
    if private_key.is_file() and public_key.is_file():
        return public_key.read_text().strip()
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + f" {comment}"
    )
    # ssh refuses private keys that others can read, so create it 0600 from the start.
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_bytes)
    public_key.write_text(public_line + "\n")
    return public_line
