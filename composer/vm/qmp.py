"""Talk to a VM's QEMU over its QMP socket (synchronous client from the qemu.qmp library)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

# qemu.qmp logs every negotiation failure at ERROR level; while we poll a socket that
# is not up yet these are expected, and our own errors say what matters.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpUnavailable(Exception):
    """The socket is missing, refused, or QEMU went away mid-command."""


def command(socket: Path, name: str, timeout: float = 10.0, **arguments: Any) -> Any:
    """Run one QMP command on a fresh connection and return its result."""
    if not socket.exists():
        raise QmpUnavailable(f"{socket} does not exist")
    qmp = QEMUMonitorProtocol(str(socket))
    try:
        qmp.settimeout(timeout)
        qmp.connect(negotiate=True)
        return qmp.cmd(name, **arguments)
    except (OSError, QMPError, TimeoutError, EOFError) as e:
        raise QmpUnavailable(f"QMP {name} on {socket}: {e!r}") from e
    finally:
        # Closing a half-open connection may fail; there is nothing left to do then.
        with contextlib.suppress(Exception):
            qmp.close()


def status(socket: Path) -> str:
    """QEMU's run state: running, paused, shutdown, ..."""
    result = command(socket, "query-status")
    return str(result["status"])


def powerdown(socket: Path) -> None:
    """Press the ACPI power button: the guest shuts down cleanly, then QEMU exits."""
    command(socket, "system_powerdown")


def quit_now(socket: Path) -> None:
    """Stop QEMU immediately (like pulling the plug)."""
    # QEMU often closes the socket before answering `quit`.
    with contextlib.suppress(QmpUnavailable):
        command(socket, "quit")
