"""SSH to a VM: the per-VM ssh_config, the readiness probe, and a command runner.

Throwaway VMs get a new host key on every first boot, so host-key checking is off and
nothing is written to the user's known_hosts; the VM's own key is the only identity."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from composer.vm.ports import LOCALHOST
from composer.vm.vmdir import VmDir

USER = "root"

# While a guest boots or reboots, every probe fails, and paramiko logs each failure with
# a traceback at ERROR level; the failures reach callers as exceptions anyway.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


def write_ssh_config(vm: VmDir, port: int) -> None:
    """An ssh_config that both OpenSSH (`ssh -F`) and paramiko/testinfra understand."""
    vm.ssh_config.write_text(
        f"Host {LOCALHOST} {vm.name}\n"
        f"  HostName {LOCALHOST}\n"
        f"  Port {port}\n"
        f"  User {USER}\n"
        f"  IdentityFile {vm.key.absolute()}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
    )


def ssh_argv(vm: VmDir, command: list[str]) -> list[str]:
    return ["ssh", "-F", str(vm.ssh_config.absolute()), vm.name, *command]


def banner_answers(port: int, timeout: float = 10.0) -> bool:
    """True when something speaking SSH answers on the forwarded port.

    QEMU's user networking accepts the TCP connection itself even while nothing
    listens in the guest, so only the `SSH-` banner proves sshd is there. The timeout
    is generous: sshd re-executes itself for every connection, which under TCG on a
    busy host takes seconds, and probes that always give up too early keep sshd busy
    with dead connections and never succeed. A long probe costs little: QEMU keeps
    retrying the guest connection, so it completes as soon as sshd listens."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def connect(port: int, key: Path, timeout: float = 10.0) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # in-memory only
    client.connect(
        LOCALHOST,
        port=port,
        username=USER,
        key_filename=str(key),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


def login_works(port: int, key: Path) -> bool:
    try:
        client = connect(port, key, timeout=30)
    except (OSError, paramiko.SSHException, EOFError):
        return False
    client.close()
    return True


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


# How long past its timeout a command may take before its connection is cut.
GUARD_MARGIN = 5.0


def run_command(port: int, key: Path, command: str, timeout: float = 120.0) -> CommandResult:
    """Run command as root; raises TimeoutError when it takes longer than timeout."""
    client = connect(port, key)
    # paramiko's waits for the exec reply and the exit status have no timeout of their
    # own. A guest that reboots under an open session leaves them waiting for ever
    # (QEMU's user networking keeps the host side of the TCP connection open; seen in
    # bench/update.py). Closing the client ends every such wait.
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        client.close()

    guard = threading.Timer(timeout + GUARD_MARGIN, cut)
    guard.daemon = True
    guard.start()
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        status = out.channel.recv_exit_status()
    except (OSError, paramiko.SSHException, EOFError):
        if expired.is_set():
            raise TimeoutError(f"no answer to `{command}` within {timeout:.0f}s") from None
        raise
    finally:
        guard.cancel()
        client.close()
    if expired.is_set():
        raise TimeoutError(f"no answer to `{command}` within {timeout:.0f}s")
    return CommandResult(status, stdout, stderr)


def wait_until_ready(
    port: int,
    key: Path,
    deadline: float,
    still_running: Callable[[], bool],
    report: Callable[[str], None],
    interval: float = 1.0,
) -> bool:
    """Poll until the banner answers and a key login succeeds; False on deadline or exit.

    report() gets a progress line with the elapsed seconds about every 5 s."""
    start = time.monotonic()
    last_report = start
    stage = "waiting for the SSH banner"
    while time.monotonic() < deadline:
        if not still_running():
            return False
        if banner_answers(port):
            stage = "SSH banner answered, logging in with the VM key"
            if login_works(port, key):
                return True
        now = time.monotonic()
        if now - last_report >= 5:
            report(f"    {stage} ({now - start:.0f}s)")
            last_report = now
        time.sleep(interval)
    return False
