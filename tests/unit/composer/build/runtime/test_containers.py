"""Container units, archives and the Docker TLS endpoint (composer/build/runtime/:
containers.py, dockertls.py, provisioning.py; and hostd/containers.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from composer.build.runtime.containers import (
    docker_run_argv,
    go_duration,
    install_containers,
    unit_dropin,
)
from composer.build.runtime.dockertls import install_tls
from composer.build.runtime.provisioning import bake_config
from composer.core.errors import KeelError
from composer.definition.model import ContainerService, HealthCheck
from hostd import containers as loader
from tests.unit.conftest import Project

SERVICE = ContainerService(
    name="web",
    image="demo/web:1",
    command=("sh", "-c", "echo $HOME 100% > /data/x"),
    env=(("GREETING", "hello world"),),
    ports=("8080:80",),
    volumes=("web-data:/data",),
    restart="on-failure",
    healthcheck=HealthCheck(command=("cat", "/data/x"), interval="1min", retries=2),
)


def test_docker_run_has_every_declared_setting() -> None:
    argv = docker_run_argv(SERVICE)
    assert argv[:5] == ["/usr/bin/docker", "run", "--rm", "--name", "web"]
    joined = shlex.join(argv)
    for part in (
        "--env 'GREETING=hello world'",
        "--publish 8080:80",
        "--volume web-data:/data",
        "--health-cmd 'cat /data/x'",
        "--health-interval 1m",
        "--health-retries 2",
    ):
        assert part in joined  # fmt: skip
    assert argv[-4:] == ["demo/web:1", "sh", "-c", "echo $HOME 100% > /data/x"]
    assert "--restart" not in argv  # systemd supervises


def test_dropin_quotes_for_systemd() -> None:
    text = unit_dropin(SERVICE)
    assert "Restart=on-failure\n" in text
    # systemd must pass $ and % through to the container's shell untouched.
    assert '"echo $$HOME 100%% > /data/x"' in text
    assert '"GREETING=hello world"' in text


@pytest.mark.parametrize(
    ("given", "docker"),
    [("10s", "10s"), ("5min", "5m"), ("1d", "24h"), ("5m", "5m"), ("2h", "2h"), ("1w", "168h")],
)
def test_durations_become_go_durations(given: str, docker: str) -> None:
    assert go_duration(given) == docker


def test_install_writes_units_archives_and_enables(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    (project.images / "web.tar").write_bytes(b"archive")
    defn = project.load(
        minimal("""
        containers:
          archives: [web.tar]
          services:
            - {name: web, image: "demo/web:1", volumes: ["data:/data"]}
    """)
    )
    tree = tmp_path / "tree"
    install_containers(defn, tree)
    assert (tree / "usr/lib/keel/containers/00-web.tar").read_bytes() == b"archive"
    units = tree / "usr/lib/systemd/system"
    assert (units / "keel-container@.service").is_file()
    assert (units / "keel-container-load.service").is_file()
    assert "demo/web:1" in (units / "keel-container@web.service.d/10-container.conf").read_text()
    declared = json.loads((tree / "usr/lib/keel/containers.json").read_text())
    assert declared["services"][0]["name"] == "web"
    link = tree / "etc/systemd/system/multi-user.target.wants/keel-container@web.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/keel-container@.service"


def test_archives_alone_are_loaded_at_boot(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    # No declared container pulls the loader in, and the engine starts on demand: the
    # loader itself must be enabled (found by the bookworm smoke test in QEMU).
    (project.images / "web.tar").write_bytes(b"archive")
    tree = tmp_path / "tree"
    install_containers(project.load(minimal("containers:\n  archives: [web.tar]\n")), tree)
    link = tree / "etc/systemd/system/multi-user.target.wants/keel-container-load.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/keel-container-load.service"
    unit = (tree / "usr/lib/systemd/system/keel-container-load.service").read_text()
    assert "WantedBy=multi-user.target" in unit  # so the first boot's presets keep it


def test_host_volumes_outside_var_are_refused(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    defn = project.load(
        minimal("""
        containers:
          services:
            - {name: web, image: "demo/web:1", volumes: ["/usr/share:/data"]}
    """)
    )
    with pytest.raises(KeelError, match="read-only"):
        install_containers(defn, tmp_path)


def test_no_containers_no_units(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    install_containers(project.load(minimal("")), tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_tls_endpoint_certificates_and_dropin(
    project: Project, minimal: Callable[[str], str], image_tree: Path
) -> None:
    defn = project.load(minimal("docker: {tls: true, tls_port: 2377}\n"))
    tree, client = image_tree, image_tree.parent / "client"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/openssl").write_text("")  # the image's; the first boot runs it
    assert install_tls(defn, tree, client)
    dropin = (tree / "etc/systemd/system/docker.service.d/keel-tls.conf").read_text()
    assert "ExecStart=\n" in dropin
    assert "-H tcp://0.0.0.0:2377 --tlsverify" in dropin
    # The server pair is each machine's own, made on its first boot (this machine's
    # openssl stands in for the image's).
    subprocess.run([tree / "usr/lib/keel/docker-tls-keygen", tree / "etc/docker/tls"],
                   check=True, capture_output=True)  # fmt: skip
    assert (tree / "etc/docker/tls/server-key.pem").stat().st_mode & 0o777 == 0o600
    server = x509.load_pem_x509_certificate((tree / "etc/docker/tls/server-cert.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.2.15"}
    # Then the machine's host name (test_dockertls.py checks which).
    assert names.get_values_for_type(x509.DNSName)[0] == "localhost"
    cert = x509.load_pem_x509_certificate((client / "cert.pem").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = x509.load_pem_x509_certificate((client / "client-ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    # Self-signed: no key in the image could sign it, so clients pin it instead.
    server.verify_directly_issued_by(server)


def test_no_tls_no_tcp(project: Project, minimal: Callable[[str], str], tmp_path: Path) -> None:
    assert not install_tls(project.load(minimal("")), tmp_path / "tree", tmp_path / "client")
    assert not (tmp_path / "tree").exists()


def test_baked_butane_config_becomes_ignition(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    (project.images / "host.bu").write_text("variant: keel\nversion: 1.0.0\n")
    defn = project.load(minimal("provisioning: {config: host.bu}\n"))
    baked = bake_config(defn, tmp_path)
    assert baked is not None
    assert json.loads(baked.read_text()) == {"ignition": {"version": "3.4.0"}}


def test_loader_loads_each_archive_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archives, loaded = tmp_path / "archives", tmp_path / "loaded"
    archives.mkdir()
    (archives / "00-a.tar").write_bytes(b"a")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "Loaded image: a:1", "")

    monkeypatch.setattr(loader.subprocess, "run", fake_run)
    assert loader.load_archives(archives, loaded) == 0
    assert loader.load_archives(archives, loaded) == 0
    assert calls == [["docker", "load", "--input", str(archives / "00-a.tar")]]


def test_engine_starts_on_demand_unless_a_tcp_endpoint_needs_it(
    project: Project, minimal: Callable[[str], str], tmp_path: Path
) -> None:
    from composer.build.runtime.engine import start_engine_on_demand

    def tree_with_docker(name: str) -> Path:
        tree = tmp_path / name
        for wants, unit in (("multi-user", "docker.service"), ("multi-user", "containerd.service"),
                            ("sockets", "docker.socket")):  # fmt: skip
            link = tree / f"etc/systemd/system/{wants}.target.wants/{unit}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"/lib/systemd/system/{unit}")
        return tree

    tree = tree_with_docker("plain")
    assert start_engine_on_demand(project.load(minimal("")), tree)
    assert not (tree / "etc/systemd/system/multi-user.target.wants/docker.service").is_symlink()
    assert (tree / "etc/systemd/system/sockets.target.wants/docker.socket").is_symlink()
    tls = tree_with_docker("tls")
    assert not start_engine_on_demand(project.load(minimal("docker: {tls: true}\n")), tls)
    assert (tls / "etc/systemd/system/multi-user.target.wants/docker.service").is_symlink()
    assert not start_engine_on_demand(project.load(minimal("")), tmp_path / "no-docker")
