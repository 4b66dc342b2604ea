"""SSH to a VM: the per-VM ssh_config, the readiness probe, and a command runner.

Throwaway VMs get a new host key on every first boot, so host-key checking is off and
nothing is written to the user's known_hosts; the VM's own key is the only identity."""

from __future__ import annotations

import logging
import select
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
    conn = first_answering_connection(port, timeout)
    if conn is None:
        return False
    with conn:
        try:
            return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False


def connect(
    port: int, key: Path, timeout: float = 10.0, sock: socket.socket | None = None
) -> paramiko.SSHClient:
    """A logged-in client; sock: an open connection to the port to log in over."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # in-memory only
    client.connect(
        LOCALHOST,
        port=port,
        sock=sock,
        username=USER,
        key_filename=str(key),
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
    )
    return client


# How long a login attempt waits for the banner. sshd starts processes for every
# connection, which takes seconds under TCG while the engine starts beside it, so the
# wait is generous. But QEMU's user network accepts every connection at once and
# passes it on to the guest, retrying with backoff while the guest does not answer
# (its network is not up yet): a connection opened too early reaches sshd only at its
# next retry, seconds after sshd listens. So the first attempt waits for the console
# to say sshd started (bootlog.SshdStartWatch). Even then the guest's address may come
# a moment later and QEMU hold that first connection: so each attempt opens another
# connection while the first stays silent (first_answering_connection), and the first
# attempts after the sign are short too (6 s, then doubling up to LOGIN_TIMEOUT: with
# a first wait of 30 s, one of six trixie boots took 45 s to SSH where the others
# took 27 s). Without the sign within SSHD_SIGN_WAIT (a console that prints no
# status), attempts begin at 3 s and grow.
LOGIN_TIMEOUT = 30.0
FIRST_SIGNED_TIMEOUT = 6.0
FIRST_BLIND_TIMEOUT = 3.0
SSHD_SIGN_WAIT = 45.0


# A connection still without the banner this long after it opened may be one that QEMU
# holds (the guest had no address yet when it opened: DHCP was seen to finish 0.7 and
# 1.4 s after sshd listened, and the first login then came 7 s late). Another
# connection opened then reaches the guest at once if its address has come meanwhile;
# the first that answers is used and the others are closed. A held connection costs
# the guest nothing until it answers; the banner normally comes 0.5 s after opening.
NEXT_CONNECTION_AFTER = 1.5
MAX_CONNECTIONS = 4


def first_answering_connection(port: int, timeout: float) -> socket.socket | None:
    """A connection to port whose peer has sent something (the SSH banner), unread;
    None if none has within timeout. While none answers, opens another connection
    every NEXT_CONNECTION_AFTER seconds (at most MAX_CONNECTIONS open)."""
    deadline = time.monotonic() + timeout
    next_at = time.monotonic()
    waiting: list[socket.socket] = []
    winner: socket.socket | None = None
    try:
        while winner is None and time.monotonic() < deadline:
            if time.monotonic() >= next_at and len(waiting) < MAX_CONNECTIONS:
                next_at = time.monotonic() + NEXT_CONNECTION_AFTER
                try:
                    waiting.append(socket.create_connection((LOCALHOST, port), timeout=2.0))
                except OSError:
                    continue
            # Until the next connection is due, or the deadline when no more may open.
            until = deadline if len(waiting) == MAX_CONNECTIONS else min(next_at, deadline)
            wait = max(0.0, until - time.monotonic())
            if not waiting:
                time.sleep(wait)
                continue
            readable, _, _ = select.select(waiting, [], [], wait)
            for conn in readable:
                if _has_data(conn):
                    winner = conn
                    break
                # Closed before a word: nothing listens in the guest yet.
                waiting.remove(conn)
                conn.close()
        return winner
    finally:
        for conn in waiting:
            if conn is not winner:
                conn.close()


def _has_data(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1, socket.MSG_PEEK))
    except OSError:
        return False


def try_login(port: int, key: Path, timeout: float = LOGIN_TIMEOUT) -> str | None:
    """None when a key login works; else what is missing, for the progress line.

    The login goes over the first connection that brings the banner: every extra
    login would cost the booting guest one more sshd-session to start."""
    sock = first_answering_connection(port, timeout)
    if sock is None:
        return "waiting for the SSH banner"
    try:
        # paramiko's transport owns sock from here, and closes it when the login fails.
        client = connect(port, key, timeout=timeout, sock=sock)
    except paramiko.AuthenticationException:
        return "SSH answered, but the VM key is not accepted yet"
    except (OSError, paramiko.SSHException, EOFError):
        return "waiting for the SSH banner"
    client.close()
    return None


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


# How long past its timeout a command may take before its connection is cut.
GUARD_MARGIN = 5.0
# Seconds of silence on a command's connection before the client probes the guest.
KEEPALIVE_INTERVAL = 10


def run_command(port: int, key: Path, command: str, timeout: float = 120.0) -> CommandResult:
    """Run command as root; raises TimeoutError when it takes longer than timeout."""
    client = connect(port, key)
    # A keepalive every few seconds: a guest that rebooted under the session answers
    # it with a reset, so the wait below ends at once instead of at the guard's timer.
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_INTERVAL)
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
    sshd_started: Callable[[], bool],
) -> bool:
    """Poll until a key login succeeds; False on deadline or when the VM exits.

    sshd_started() tells when the console says sshd listens. report() gets a progress
    line with the elapsed seconds about every 5 s."""
    start = time.monotonic()
    last_report = start
    blind_timeout = FIRST_BLIND_TIMEOUT
    signed_timeout = FIRST_SIGNED_TIMEOUT
    while time.monotonic() < deadline:
        if not still_running():
            return False
        pause = 1.0  # after a login attempt: each one costs the guest an sshd-session
        if sshd_started():
            stage = try_login(port, key, signed_timeout)
            signed_timeout = min(signed_timeout * 2, LOGIN_TIMEOUT)
        elif time.monotonic() - start > SSHD_SIGN_WAIT:
            stage = try_login(port, key, blind_timeout)
            blind_timeout = min(blind_timeout + 1, LOGIN_TIMEOUT)
        else:
            stage, pause = "waiting for sshd to start (serial console)", 0.2
        if stage is None:
            return True
        now = time.monotonic()
        if now - last_report >= 5:
            report(f"    {stage} ({now - start:.0f}s)")
            last_report = now
        time.sleep(pause)
    return False
