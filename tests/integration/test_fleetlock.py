"""`keel fleetlock` against a real etcd (Debian's etcd-server) on loopback, no VM:

  - a group of one slot serialises two hosts: the second gets the slot only after the
    first gave it back in steady state (the server's log of holders, with times, says
    there was never more than one);
  - the state lives in etcd: a server killed while a host holds the slot, and a new
    instance started, still knows the holder;
  - several instances serve one fleet: concurrent requests through two servers give
    out exactly the slots there are;
  - a semaphore written as airlock writes it is honoured;
  - `keel fleetlock holders` and `release`;
  - hostd's FleetLock client, as its strategy runs it, against the real server;
  - two hosts on files (hostd's updater with a real TUF repository, reboots faked):
    the second reboots only after the first passed its gate and gave the slot back;
    a version that fails on the first host stops there, and after `keel publish
    --halt` and `keel fleetlock release` the second host drops its pending install.

Needs `etcd` (apt-get install etcd-server); takes a few seconds."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from composer.fleet import semaphore
from composer.fleet.etcd import Etcd
from composer.fleet.localetcd import EtcdTls, running_etcd
from composer.publish import repository
from hostd import fleetlock
from hostd.fleet import Coordinator
from hostd.fleetlock import Backoff, FleetLock, FleetLockConfig
from hostd.policy import Policy, Window
from tests.integration.tlsserver import make_ca_and_server_cert
from tests.unit.hostd.hosts import Host, boot, make_host

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)"),
]

KEEL = [sys.executable, "-m", "composer.cli"]


@pytest.fixture
def etcd_url(tmp_path: Path) -> Iterator[str]:
    with running_etcd(tmp_path / "etcd") as url:
        yield url


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self, kill: bool = True) -> None:
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(10)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def start_server(etcd_url: str, log: Path, *extra: str) -> Server:
    handle = log.open("a")
    process = subprocess.Popen(
        [*KEEL, "fleetlock", "serve", "--etcd", etcd_url, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=handle,
        text=True,
    )
    handle.close()
    assert process.stdout is not None
    url = process.stdout.readline().strip()  # the first line, as `keel serve`
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        process.kill()
        process.wait(10)
        pytest.fail(f"keel fleetlock serve printed {url!r}:\n{log.read_text()}")
    return Server(process, url, log)


@pytest.fixture
def servers(etcd_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def keel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEEL, "fleetlock", *args], capture_output=True, text=True, timeout=30)


def ask(url: str, endpoint: str, node: str, group: str = "default") -> fleetlock.Answer:
    return fleetlock.post(url, endpoint, fleetlock.request_body(node, group))


def holders_in_log(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(time, holders) after each change the server logged."""
    found = []
    for line in lines:
        match = re.search(r"fleetlock: (\S+) (?:lock|unlock) .*holders=(\S+)", line)
        if match:
            holders = [] if match[2] == "-" else match[2].split(",")
            found.append((match[1], holders))
    return found


def test_one_slot_serialises_two_hosts(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    server = start_server(etcd_url, tmp_path / "server.log", "--slots", "1")
    servers.append(server)
    assert ask(server.url, fleetlock.PRE_REBOOT, "host-a").ok
    refused = ask(server.url, fleetlock.PRE_REBOOT, "host-b")
    assert (refused.status, refused.kind) == (500, "failed_lock")
    assert ask(server.url, fleetlock.PRE_REBOOT, "host-a").ok  # recursive
    assert ask(server.url, fleetlock.STEADY_STATE, "host-a").ok
    assert ask(server.url, fleetlock.PRE_REBOOT, "host-b").ok
    assert ask(server.url, fleetlock.STEADY_STATE, "host-b").ok
    changes = holders_in_log(server.log_lines())
    assert [h for _, h in changes] == [["host-a"], ["host-a"], [], ["host-b"], []]
    assert all(len(h) <= 1 for _, h in changes)
    times = [t for t, _ in changes]
    assert times == sorted(times)


def test_the_holder_survives_a_killed_server(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    first = start_server(etcd_url, tmp_path / "first.log")
    servers.append(first)
    assert ask(first.url, fleetlock.PRE_REBOOT, "host-a").ok
    first.stop(kill=True)
    second = start_server(etcd_url, tmp_path / "second.log")
    servers.append(second)
    assert ask(second.url, fleetlock.PRE_REBOOT, "host-b").kind == "failed_lock"
    listed = keel("holders", "--etcd", etcd_url, "--json")
    assert json.loads(listed.stdout) == {"default": {"total_slots": 1, "holders": ["host-a"]}}
    assert ask(second.url, fleetlock.STEADY_STATE, "host-a").ok
    assert ask(second.url, fleetlock.PRE_REBOOT, "host-b").ok


def test_two_instances_give_out_exactly_the_slots_there_are(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    one = start_server(etcd_url, tmp_path / "one.log", "--group", "web=3")
    two = start_server(etcd_url, tmp_path / "two.log", "--group", "web=3")
    servers += [one, two]
    answers: dict[str, fleetlock.Answer] = {}

    def take(node: str, url: str) -> None:
        answers[node] = ask(url, fleetlock.PRE_REBOOT, node, "web")

    threads = [
        threading.Thread(target=take, args=(f"host-{i:02d}", (one, two)[i % 2].url))
        for i in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    granted = sorted(node for node, answer in answers.items() if answer.ok)
    assert len(answers) == 16 and len(granted) == 3
    listed = json.loads(keel("holders", "--etcd", etcd_url, "web", "--json").stdout)
    assert listed == {"web": {"total_slots": 3, "holders": granted}}


def test_a_semaphore_written_by_airlock_is_honoured(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    etcd = Etcd(etcd_url)
    # What airlock writes for group "workers" with 2 slots and one holder.
    written = b'{"total_slots":2,"holders":["27e3ac02af3946af995c9940e18b0cce"]}'
    assert etcd.put_if_version(b"com.coreos.airlock/groups/workers/v1/semaphore", 0, written)
    server = start_server(etcd_url, tmp_path / "server.log", "--slots", "5")
    servers.append(server)
    assert ask(server.url, fleetlock.PRE_REBOOT, "host-a", "workers").ok
    assert ask(server.url, fleetlock.PRE_REBOOT, "host-b", "workers").kind == "failed_lock"
    stored = etcd.get(semaphore.key("workers"))
    assert stored is not None and stored.version == 2
    assert json.loads(stored.value) == {
        "total_slots": 2,
        "holders": ["27e3ac02af3946af995c9940e18b0cce", "host-a"],
    }


def test_holders_and_release(etcd_url: str, servers: list[Server], tmp_path: Path) -> None:
    server = start_server(etcd_url, tmp_path / "server.log")
    servers.append(server)
    assert "no semaphores in etcd" in keel("holders", "--etcd", etcd_url).stdout
    assert ask(server.url, fleetlock.PRE_REBOOT, "lost-host").ok
    listed = keel("holders", "--etcd", etcd_url)
    assert listed.stdout.strip() == "default: 1/1 held: lost-host"
    released = keel("release", "--etcd", etcd_url, "default", "lost-host")
    assert released.returncode == 0, released.stderr
    assert "released lost-host in group default" in released.stdout
    again = keel("release", "--etcd", etcd_url, "default", "lost-host")
    assert again.returncode == 1 and "holds no slot" in again.stderr
    assert ask(server.url, fleetlock.PRE_REBOOT, "other-host").ok


def test_hostd_takes_the_slot_and_gives_it_back_in_steady_state(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    server = start_server(etcd_url, tmp_path / "server.log")
    servers.append(server)
    config = FleetLockConfig(server.url, "default", "hold")
    first = FleetLock(tmp_path / "a", node=lambda: "host-a")
    second = FleetLock(tmp_path / "b", node=lambda: "host-b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert first.acquire(config, "2.0.0")
    assert not second.acquire(config, "2.0.0")
    assert second.status()["last_answer"]["kind"] == "failed_lock"
    # host-a rebooted into 2.0.0 and passed its health gate: steady state.
    first.settle(config, healthy=True, pending_version="", rolled_back="")
    assert not first.load().held
    second.backoff.succeeded()  # the agent's next tick after the backoff
    assert second.acquire(config, "2.0.0")


# --- two hosts on files (hostd's updater, faked reboots) against the real server --------


def fleet_host(tmp_path: Path, name: str, url: str) -> Host:
    host = make_host(tmp_path / name)
    policy = Policy(
        repository=f"file://{host.repo}",
        reboot="fleet_lock",
        window=Window(start="00:00", duration="24h"),
        fleet_lock=FleetLockConfig(url, "web", "hold"),
    )
    host.updater.paths.policy = lambda: policy
    attach(host, name)
    return host


def attach(host: Host, name: str) -> None:
    """The fleet coordinator of a (re)started hostd: this host's id, no backoff wait."""
    coordinator = Coordinator(host.root / "state", node=lambda: f"host-{name}")
    coordinator.lock.backoff = Backoff(base=0.0, cap=0.0, jitter=lambda: 0.0)
    host.updater.fleet = coordinator


def share_repository(first: Host, second: Host) -> None:
    """Both hosts trust one repository (the first one's keys and folder)."""
    shutil.copyfile(first.keys / "root.json", second.keys / "root.json")
    second.updater.paths.trust_root = first.keys / "root.json"
    second.repo = first.repo
    policy = second.updater.paths.policy()
    second.updater.paths.policy = lambda: replace(policy, repository=f"file://{first.repo}")


def bless_entry(host: Host, version: str, slot: str) -> None:
    entries = host.root / "esp/loader/entries"
    (entries / f"keel-{version}-{slot}+3.conf").rename(entries / f"keel-{version}-{slot}.conf")


def restart(host: Host, name: str, slot: str, version: str) -> None:
    boot(host, slot, version)
    attach(host, name)
    host.updater.reconcile()
    host.updater.fleet.settle(host.updater)


def two_hosts_and_a_new_version(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> tuple[Server, Host, Host]:
    """A FleetLock server with one reboot slot for group web, and hosts a and b on
    1.0.0 sharing a repository where 2.0.0 is published."""
    server = start_server(etcd_url, tmp_path / "server.log", "--group", "web=1")
    servers.append(server)
    a, b = fleet_host(tmp_path, "a", server.url), fleet_host(tmp_path, "b", server.url)
    share_repository(a, b)
    a.publish("2.0.0")
    return server, a, b


def test_two_hosts_reboot_one_after_the_other(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    server, a, b = two_hosts_and_a_new_version(etcd_url, servers, tmp_path)
    assert a.updater.update()["rebooting"] is True  # a takes the slot
    assert b.updater.update()["rebooting"] is False  # the group is full
    assert not b.updater.reboot_if_due()
    assert b.updater.status()["fleet"]["lock"]["last_answer"]["kind"] == "failed_lock"

    restart(a, "a", "b", "2.0.0")  # trial: the gate has not passed, a keeps the slot
    assert not b.updater.reboot_if_due()
    bless_entry(a, "2.0.0", "b")
    a.updater.reconcile()
    a.updater.fleet.settle(a.updater)  # steady state: the slot goes back
    assert b.updater.reboot_if_due()
    assert (a.reboots, b.reboots) == (["reboot"], ["reboot"])
    changes = holders_in_log(server.log_lines())
    assert [h for _, h in changes if h] == [["host-a"], ["host-b"]]
    assert all(len(h) <= 1 for _, h in changes)


def test_a_bad_version_stops_at_the_first_host(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    _, a, b = two_hosts_and_a_new_version(etcd_url, servers, tmp_path)
    a.updater.update()
    b.updater.update()
    # a boots 2.0.0, fails its health gate, and is back on 1.0.0 holding the slot.
    entries_dir = a.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b+0-3.conf")
    restart(a, "a", "a", "1.0.0")
    assert a.updater.status()["last_result"]["result"] == "rolled-back"
    assert a.updater.status()["fleet"]["lock"]["held_after_failure"] == "2.0.0"
    assert not b.updater.reboot_if_due()  # the line stops
    # The operator halts 2.0.0 and frees a's slot.
    repository.publish(a.repo, None, a.keys, halt_version="2.0.0")
    released = keel("release", "--etcd", etcd_url, "web", "host-a")
    assert released.returncode == 0, released.stderr
    restart(b, "b", "a", "1.0.0")  # b's hostd looks again (a timer tick)
    assert b.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    assert b.updater.status()["last_result"]["result"] == "halted"
    assert not b.updater.reboot_if_due()
    assert (a.reboots, b.reboots) == (["reboot"], [])


def test_tls_serving_and_a_client_that_checks_the_certificate(
    etcd_url: str, servers: list[Server], tmp_path: Path
) -> None:
    ca_pem, cert, key = make_ca_and_server_cert(tmp_path)
    server = start_server(
        etcd_url, tmp_path / "server.log", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    servers.append(server)
    assert server.url.startswith("https://127.0.0.1:")
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    connection.request(
        "POST",
        "/v1/pre-reboot",
        body=fleetlock.request_body("host-a", "default"),
        headers={"fleet-lock-protocol": "true"},
    )
    assert connection.getresponse().status == 200
    connection.close()
    # hostd checks against the system's CAs: a certificate from an unknown CA is no answer.
    refused = ask(server.url, fleetlock.PRE_REBOOT, "host-b")
    assert refused.status == 0 and "CERTIFICATE_VERIFY_FAILED" in refused.value


def make_etcd_tls(folder: Path) -> EtcdTls:
    """A test CA, etcd's server certificate for 127.0.0.1, and a client certificate."""
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return folder / f"{stem}.pem"

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, *usage: x509.ObjectIdentifier
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("etcd test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        )
        return builder.sign(ca_key, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("etcd test CA"))
        .issuer_name(name("etcd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    # etcd's JSON gateway dials etcd's own gRPC with the server certificate, which
    # --client-cert-auth then checks as a client certificate: it needs both usages.
    server = issue(
        "etcd", server_key, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    client = issue("keel fleetlock", client_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    return EtcdTls(
        ca=write("ca", ca, ca_key),
        server_cert=write("server", server, server_key),
        server_key=folder / "server.key",
        client_cert=write("client", client, client_key),
        client_key=folder / "client.key",
    )


def test_etcd_over_https_with_a_client_certificate(tmp_path: Path) -> None:
    tls = make_etcd_tls(tmp_path / "pki")
    with running_etcd(tmp_path / "etcd", tls) as etcd_url:
        assert etcd_url.startswith("https://")
        files = ["--etcd-ca", str(tls.ca)]
        client = ["--etcd-cert", str(tls.client_cert), "--etcd-key", str(tls.client_key)]
        refused = keel("holders", "--etcd", etcd_url, *files)
        assert refused.returncode == 1  # no client certificate
        assert refused.stderr.startswith("keel: error: etcd: no etcd endpoint answered")
        server = start_server(etcd_url, tmp_path / "server.log", *files, *client)
        try:
            assert ask(server.url, fleetlock.PRE_REBOOT, "host-a").ok
        finally:
            server.stop()
        listed = keel("holders", "--etcd", etcd_url, *files, *client)
        assert listed.stdout.strip() == "default: 1/1 held: host-a", listed.stderr
