"""A throwaway single-member etcd on loopback (Debian's etcd-server), for tests, the
benchmark and development: free ports, its data in a folder the caller gives.

The same by hand (docs/fleet.md):

    etcd --name dev --data-dir /tmp/keel-etcd \\
      --listen-client-urls http://127.0.0.1:2379 \\
      --advertise-client-urls http://127.0.0.1:2379 \\
      --listen-peer-urls http://127.0.0.1:2380 \\
      --initial-advertise-peer-urls http://127.0.0.1:2380 \\
      --initial-cluster dev=http://127.0.0.1:2380"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from composer.core.errors import KeelError
from composer.fleet.etcd import Etcd, EtcdError, tls_context

START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdTls:
    """PEM files for an etcd that serves https and asks clients for a certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@contextmanager
def running_etcd(folder: Path, tls: EtcdTls | None = None) -> Iterator[str]:
    """etcd with its data in folder/data and its log in folder/etcd.log; yields the
    client URL and stops etcd (its own process, by pid) afterwards. With tls, clients
    need a certificate signed by tls.ca (--client-cert-auth)."""
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(binary).exists():
        raise KeelError("etcd is not installed", hint="apt-get install etcd-server")
    folder.mkdir(parents=True, exist_ok=True)
    scheme = "https" if tls else "http"
    client, peer = f"{scheme}://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    command = [
        binary, "--name", "keel-test", "--data-dir", str(folder / "data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"keel-test={peer}", "--log-level", "warn",
    ]  # fmt: skip
    context = None
    if tls is not None:
        command += [
            "--cert-file", str(tls.server_cert), "--key-file", str(tls.server_key),
            "--trusted-ca-file", str(tls.ca), "--client-cert-auth",
        ]  # fmt: skip
        context = tls_context(tls.ca, tls.client_cert, tls.client_key)
    with (folder / "etcd.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        etcd = Etcd(client, timeout=1.0, tls=context)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                etcd.get(b"keel-start-probe")
                break
            except EtcdError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_text = (folder / "etcd.log").read_text(errors="replace")[-2000:]
                    raise KeelError(f"etcd did not start:\n{log_text}") from None
                time.sleep(0.05)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
