"""The host port that QEMU forwards to the guest's SSH port.

The kernel picks a free port when we bind port 0; we close the socket and hand the
number to QEMU's hostfwd. Another process can take the port between those two steps;
that race is handled by retrying: the runner recognises QEMU's host-forward failure
(is_hostfwd_failure) and starts again with a fresh port."""

from __future__ import annotations

import socket

LOCALHOST = "127.0.0.1"


def pick_free_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def is_hostfwd_failure(qemu_stderr: str) -> bool:
    """True when QEMU failed because its SSH forward could not bind the host port."""
    # Match QEMU's message, not just "hostfwd": every -netdev error echoes the option
    # (which contains "hostfwd=") and most of them are not about the port.
    return "could not set up host forwarding rule" in qemu_stderr.lower()
