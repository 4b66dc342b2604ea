"""The Docker TLS endpoint's trust model, with real openssl and real TLS handshakes:
the build makes the client side and bakes only the client CA certificate; each machine
makes its own server key and self-signed certificate on first boot
(overlays/docker-tls/usr/lib/keel/docker-tls-keygen); a client pins the host by that
certificate, and nothing else lets it in or vouches for the host."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from composer.build.privatekeys import scan_tree
from composer.build.runtime.dockertls import CLIENT_CA, TLS_DIR, install_tls
from composer.core.errors import KeelError
from composer.core.paths import OVERLAYS_DIR
from tests.unit.conftest import Project

KEYGEN = OVERLAYS_DIR / "docker-tls/usr/lib/keel/docker-tls-keygen"
UNIT = OVERLAYS_DIR / "docker-tls/usr/lib/systemd/system/keel-docker-tls.service"


def first_boot(folder: Path) -> Path:
    """What keel-docker-tls.service does on a machine's first boot."""
    subprocess.run([KEYGEN, folder], check=True, capture_output=True)
    return folder


def certificate(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "server-cert.pem").read_bytes())


def machine_names() -> set[str]:
    names = {os.uname().nodename}
    hostname = Path("/etc/hostname")
    if hostname.is_file() and hostname.read_text().strip():
        names.add(hostname.read_text().strip())
    return names


@pytest.fixture
def built(project: Project, minimal: Callable[[str], str], image_tree: Path) -> Path:
    """An image tree after the build step, with docker.tls on; client side beside it."""
    (image_tree / "usr/bin").mkdir(parents=True)
    (image_tree / "usr/bin/openssl").write_text("")
    defn = project.load(minimal("docker: {tls: true}\n"))
    assert install_tls(defn, image_tree, image_tree.parent / "docker-tls")
    return image_tree


def test_the_image_holds_only_the_client_ca_certificate(built: Path) -> None:
    tls = built / TLS_DIR
    assert sorted(p.name for p in tls.iterdir()) == [CLIENT_CA]
    assert scan_tree(built) == []  # no private key anywhere in the tree
    client = built.parent / "docker-tls"
    assert (tls / CLIENT_CA).read_bytes() == (client / CLIENT_CA).read_bytes()
    assert (client / "key.pem").stat().st_mode & 0o777 == 0o600
    assert client.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in client.iterdir()) == ["cert.pem", CLIENT_CA, "key.pem"]


def test_first_boot_makes_a_private_key_and_a_self_signed_certificate(tmp_path: Path) -> None:
    tls = first_boot(tmp_path / "tls")
    assert sorted(p.name for p in tls.iterdir()) == ["server-cert.pem", "server-key.pem"]
    assert (tls / "server-key.pem").stat().st_mode & 0o777 == 0o600
    assert (tls / "server-cert.pem").stat().st_mode & 0o777 == 0o644
    cert = certificate(tls)
    key = serialization.load_pem_private_key((tls / "server-key.pem").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.2.15"),
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost"} | machine_names()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_every_machine_makes_its_own_key(tmp_path: Path) -> None:
    one, other = first_boot(tmp_path / "one"), first_boot(tmp_path / "other")
    assert certificate(one).public_key() != certificate(other).public_key()


def test_a_client_pinning_the_host_gets_in_and_nothing_else_does(
    built: Path, tmp_path: Path
) -> None:
    host = first_boot(tmp_path / "host")
    other_host = first_boot(tmp_path / "other-host")
    client = built.parent / "docker-tls"
    with dockerd_like_server(host, built / TLS_DIR / CLIENT_CA) as port:
        assert handshake(port, host / "server-cert.pem", client) == "ok"
        # The pin is the host's own certificate: another machine's, or the build's CA,
        # vouches for nothing.
        assert "CERTIFICATE_VERIFY_FAILED" in handshake(
            port, other_host / "server-cert.pem", client
        )
        assert "CERTIFICATE_VERIFY_FAILED" in handshake(port, client / CLIENT_CA, client)
        # And the host lets in only clients with a certificate from the client CA.
        assert handshake(port, host / "server-cert.pem", None) != "ok"


def test_tls_needs_openssl_in_the_image(
    project: Project, minimal: Callable[[str], str], image_tree: Path
) -> None:
    defn = project.load(minimal("docker: {tls: true}\n"))
    with pytest.raises(KeelError, match="no /usr/bin/openssl"):
        install_tls(defn, image_tree, image_tree.parent / "docker-tls")


def test_the_unit_runs_once_before_the_engine_and_the_engine_needs_it(built: Path) -> None:
    unit = UNIT.read_text()
    assert "ConditionPathExists=!/etc/docker/tls/server-key.pem\n" in unit
    assert "Before=docker.service\n" in unit
    assert "ExecStart=/usr/lib/keel/docker-tls-keygen\n" in unit
    installed = built / "usr/lib/keel/docker-tls-keygen"
    assert installed.read_bytes() == KEYGEN.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755
    dropin = (built / "etc/systemd/system/docker.service.d/keel-tls.conf").read_text()
    assert "Requires=keel-docker-tls.service\n" in dropin
    assert f"--tlscacert=/etc/docker/tls/{CLIENT_CA} " in dropin


# --- a server that checks clients as dockerd does (--tlsverify --tlscacert) ---------


@contextmanager
def dockerd_like_server(server: Path, client_ca: Path) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server / "server-cert.pem", server / "server-key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_ca)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(10)
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()


def handshake(port: int, pinned: Path, client: Path | None) -> str:
    """ "ok", or why the connection failed, for a client that trusts only pinned."""
    context = ssl.create_default_context(cafile=str(pinned))
    # What Python 3.13 does by default; stricter than Go's checks in the docker CLI.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if client is not None:
        context.load_cert_chain(client / "cert.pem", client / "key.pem")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="10.0.2.15") as tls,
        ):
            return tls.recv(2).decode()
    except (ssl.SSLError, OSError) as error:
        return str(error)
