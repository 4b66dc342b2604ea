"""The host runtime of a booted image (issue 4): read-only OS with persistent /etc and
/var, first-boot provisioning from a Butane config, per-machine identity, preloaded
container images, declared containers, and the Docker engine driven from this machine
over ssh:// and over mutual TLS, with no private key in the image or its bundle.

Two boots of VM "rt-a" (first boot with the Butane config, then a reboot) serve most
tests; VM "rt-b", booted from the same image after rt-a is stopped, gets a config with
an unknown field and is checked through the serial debug shell (its SSH key came in
that refused config). At most one VM runs at a time. The image is
tests/integration/images/runtime-host.yaml, built once (or KEEL_RT_IMAGE=DIR)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from composer.core.paths import PROJECT_ROOT, vm_root
from composer.testing import KeelVM
from composer.tools.dockercli import docker_client as image_docker_client
from composer.vm import runner, ssh
from composer.vm.console import DebugShell
from composer.vm.keys import ensure_key
from composer.vm.vmdir import vm_dir
from tests.integration.dockerssh import docker_over_ssh
from tests.integration.images.busybox_archive import DEFAULT_TAG, make_busybox_archive
from tests.integration.initrd import initrd_names
from tests.integration.keyscan import scan_artifacts
from tests.integration.tlsserver import Served, serve_https

pytestmark = pytest.mark.integration

DEFINITION = PROJECT_ROOT / "tests/integration/images/runtime-host.yaml"
BUILD_DIR = PROJECT_ROOT / "build/rt"
BOOT_TIMEOUT = 420.0

# Issue 13's first-boot scenario: users with uid, shell and groups; a gzip file; a
# file fetched over https from this machine (a test CA, checked by hash); a tree; a
# script in /usr/local/bin run by a unit; kernel arguments; and a second virtio disk
# partitioned, formatted and mounted as /var/lib/docker, so the engine and the
# declared container below keep their data there.
BUTANE = """\
variant: keel
version: 1.0.0
ignition:
  security:
    tls:
      certificate_authorities:
        - local: test-ca.pem
passwd:
  groups:
    - name: ops-team
      gid: 2500
  users:
    - name: ops
      uid: 1500
      shell: /bin/bash
      groups: [docker, ops-team]
      ssh_authorized_keys:
        - {ops_key}
kernel_arguments:
  should_exist:
    - keel.test=provisioned
  should_not_exist:
    - transparent_hugepage=never
storage:
  disks:
    - device: /dev/vdb
      wipe_table: true
      partitions:
        - number: 1
          label: docker
  filesystems:
    - device: /dev/disk/by-partlabel/docker
      format: ext4
      label: docker
      path: /var/lib/docker
      wipe_filesystem: true
      with_mount_unit: true
  trees:
    - local: tree
      path: /etc/keel-test/tree
  files:
    - path: /etc/keel-test/notes.txt
      contents:
        local: notes.txt.gz
        compression: gzip
    - path: /etc/keel-test/fetched.txt
      mode: 0600
      contents:
        source: {fetched_url}
        verification:
          hash: sha512-{fetched_sha512}
    - path: /etc/keel-test/greeting.txt
      mode: 0640
      contents:
        inline: hello from butane
    - path: /etc/keel-test/local.txt
      contents:
        local: local.txt
    # /usr/local is writable (a link into /var, issue 13); the unit below runs it.
    - path: /usr/local/bin/keel-test-hello
      mode: 0755
      contents:
        inline: |
          #!/bin/sh
          mkdir -p /var/lib/keel-test && echo ran >> /var/lib/keel-test/runs
systemd:
  units:
    - name: keel-test-hello.service
      enabled: true
      contents: |
        [Unit]
        Description=Provisioned test unit
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/usr/local/bin/keel-test-hello
        [Install]
        WantedBy=multi-user.target
"""
BAD_CONFIG = {"ignition": {"version": "3.4.0"}, "storage": {"luks": [{"name": "data"}]}}
NOTES = b"kept gzip-compressed in the config\n" * 40
FETCHED = b"fetched over https at first boot\n"
TREE = {"a.conf": "first\n", "sub/b.conf": "second\n"}
SERVER_CERT = "/etc/docker/tls/server-cert.pem"
SERVER_KEY = "/etc/docker/tls/server-key.pem"
# The guest's own address on QEMU's user network, where dockerd listens with TLS.
ENDPOINT = "tcp://10.0.2.15:2376"

# Facts gathered on rt-a, compared with rt-b.
identity_a: dict[str, str] = {}
# The second disk's filesystem on rt-a's first boot, compared after its reboot.
disk_a: dict[str, str] = {}


@pytest.fixture(scope="module")
def rt_image() -> Path:
    given = os.environ.get("KEEL_RT_IMAGE")
    if given:
        return Path(given)
    from composer.build.pipeline import build_image

    make_busybox_archive(BUILD_DIR / "busybox.tar")
    started = time.monotonic()
    result = build_image(DEFINITION, out_dir=BUILD_DIR / "rt-host", quiet=True)
    print(f"built {DEFINITION.name} in {time.monotonic() - started:.0f}s")
    return result.out_dir


@pytest.fixture(scope="module")
def ops_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    key = tmp_path_factory.mktemp("ops") / "id_ed25519"
    return key, ensure_key(key, comment="ops@keel-test")


@pytest.fixture(scope="module")
def content_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The https server rt-a's config fetches from, up for the whole module so a
    second fetch (on the reboot) would be seen."""
    with serve_https({"fetched.txt": FETCHED}, tmp_path_factory.mktemp("tls")) as served:
        yield served


@pytest.fixture(scope="module")
def vm_a(
    rt_image: Path,
    ops_key: tuple[Path, str],
    content_server: Served,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KeelVM]:
    from composer.provisioning.butane import translate_file

    folder = tmp_path_factory.mktemp("butane")
    (folder / "local.txt").write_text("from a local file\n")
    (folder / "notes.txt.gz").write_bytes(gzip.compress(NOTES))
    (folder / "test-ca.pem").write_bytes(content_server.ca_pem)
    for relative, text in TREE.items():
        (folder / "tree" / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / "tree" / relative).write_text(text)
    butane = folder / "host.bu"
    butane.write_text(
        BUTANE.format(
            ops_key=ops_key[1],
            fetched_url=content_server.url("fetched.txt"),
            fetched_sha512=hashlib.sha512(FETCHED).hexdigest(),
        )
    )
    ignition = folder / "host.ign"
    ignition.write_bytes(translate_file(butane))
    # The second disk, blank: the config partitions and formats it.
    data_disk = folder / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data_disk), "1G"], check=True)
    options = runner.RunOptions(
        image=rt_image,
        name=f"rt-a-{secrets.token_hex(2)}",
        config=ignition,
        boot_timeout=BOOT_TIMEOUT,
        die_with_parent=True,
        extra_disks=(data_disk,),
    )
    vm = KeelVM.start(options, vm_root())
    print(f"rt-a: SSH after {vm.boot_seconds:.0f}s")
    try:
        yield vm
    finally:
        vm.stop()
        vm.kill()
        shutil.rmtree(vm.vm_dir.path, ignore_errors=True)


def out(vm: KeelVM, command: str) -> str:
    return vm.run(command, check=True).stdout.strip()


# --- the built image ---------------------------------------------------------------


def test_no_private_key_in_the_image_its_bundle_or_its_disk(rt_image: Path) -> None:
    # docker.tls is on: the image has the client CA certificate and nothing secret; the
    # server key is each machine's, made on its first boot (below).
    assert scan_artifacts(rt_image) == []
    client = rt_image / "docker-tls"
    assert sorted(p.name for p in client.iterdir()) == ["cert.pem", "client-ca.pem", "key.pem"]


# --- first boot of rt-a ------------------------------------------------------------


def test_os_is_read_only_and_state_is_on_var(vm_a: KeelVM) -> None:
    assert "ro" in out(vm_a, "findmnt -no OPTIONS /").split(",")
    assert out(vm_a, "findmnt -no FSTYPE /") == "erofs"
    assert vm_a.run("touch /usr/keel-test").exit_status != 0
    assert out(vm_a, "findmnt -no FSTYPE /var") == "ext4"
    assert out(vm_a, "findmnt -no FSTYPE /etc") == "overlay"
    assert out(vm_a, "findmnt -no FSTYPE /tmp") == "tmpfs"
    assert out(vm_a, "readlink -f /home") == "/var/home"
    identity_a["machine-id"] = out(vm_a, "cat /etc/machine-id")
    identity_a["host key"] = out(vm_a, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")


def test_a_package_from_the_non_free_firmware_component_is_in_the_image(
    vm_a: KeelVM, rt_image: Path, tmp_path: Path
) -> None:
    """debian.components reaches the bootstrap: amd64-microcode is only in
    non-free-firmware, and its early-microcode archive is in the booted initrd (inside
    the booted unified kernel image, the build's own)."""
    from composer.build import uki

    assert out(vm_a, "dpkg-query -W -f '${Status}' amd64-microcode") == "install ok installed"
    built = rt_image / "payload/keel.efi"
    booted = out(vm_a, "sha256sum /efi/keel/a/keel.efi").split()[0]
    assert booted == hashlib.sha256(built.read_bytes()).hexdigest()
    initrd = uki.dump_section(built, ".initrd", tmp_path / "initrd.img")
    assert "kernel/x86/microcode/AuthenticAMD.bin" in initrd_names(initrd)


def test_butane_config_was_applied_on_first_boot(
    vm_a: KeelVM, ops_key: tuple[Path, str], content_server: Served
) -> None:
    state = json.loads(out(vm_a, "cat /var/lib/keel/provisioned.json"))
    assert state["result"] == "applied", state
    # Users and groups with the ids, shell and groups the config gives.
    ops = out(vm_a, "getent passwd ops").split(":")
    assert (ops[2], ops[6]) == ("1500", "/bin/bash")
    assert out(vm_a, "getent group ops-team").split(":")[2] == "2500"
    assert {"docker", "ops-team"} <= set(out(vm_a, "id -nG ops").split())
    # A gzip file, unpacked; a file fetched over https, checked against its hash; a tree.
    assert out(vm_a, "sha256sum /etc/keel-test/notes.txt").split()[0] == (
        hashlib.sha256(NOTES).hexdigest()
    )
    assert out(vm_a, "cat /etc/keel-test/fetched.txt") == FETCHED.decode().strip()
    assert out(vm_a, "stat -c '%a' /etc/keel-test/fetched.txt") == "600"
    assert content_server.requests == ["/fetched.txt"]
    for relative, text in TREE.items():
        assert out(vm_a, f"cat /etc/keel-test/tree/{relative}") == text.strip()
    # Kernel arguments go into the booted slot's loader entry, for the next boot.
    assert "keel.test=provisioned" not in out(vm_a, "cat /proc/cmdline")
    entry = out(vm_a, "grep -h '^options' /efi/loader/entries/*.conf")
    assert "keel.test=provisioned" in entry and "transparent_hugepage=never" not in entry
    assert out(vm_a, "stat -c '%a %U' /etc/keel-test/greeting.txt") == "640 root"
    assert out(vm_a, "cat /etc/keel-test/greeting.txt") == "hello from butane"
    assert out(vm_a, "cat /etc/keel-test/local.txt") == "from a local file"
    assert out(vm_a, "systemctl is-active keel-test-hello.service") == "active"
    assert out(vm_a, "cat /var/lib/keel-test/runs") == "ran"  # by /usr/local/bin's script
    assert out(vm_a, "readlink /usr/local") == "../var/usrlocal"
    assert out(vm_a, "stat -c '%a %U' /var/usrlocal/bin/keel-test-hello") == "755 root"
    assert out(vm_a, "command -v keel-test-hello") == "/usr/local/bin/keel-test-hello"
    assert "docker" in out(vm_a, "id -nG ops").split()
    # The user logs in with the key from the config.
    client = login(vm_a.ssh_port, ops_key[0], "ops")
    try:
        _, stdout, _ = client.exec_command("id -un", timeout=60)
        assert stdout.read().decode().strip() == "ops"
    finally:
        client.close()
    # What was applied is on the console (journal+console) and in the journal.
    assert "applied config from" in out(vm_a, "journalctl -b -u keel-provision -o cat")
    times = dict(
        line.split("=", 1)
        for line in out(vm_a, "systemctl show -p ExecMainStartTimestampMonotonic "
                              "-p ExecMainExitTimestampMonotonic keel-provision").splitlines()
    )  # fmt: skip
    took = int(times["ExecMainExitTimestampMonotonic"]) - int(
        times["ExecMainStartTimestampMonotonic"]
    )
    print(f"keel-provision applied the config in {took / 1e6:.1f}s on the first boot")


def test_second_disk_holds_the_engine_data(vm_a: KeelVM) -> None:
    # Partitioned, formatted and mounted by the config, before dockerd started.
    assert out(vm_a, "findmnt -no SOURCE,FSTYPE /var/lib/docker").split() == ["/dev/vdb1", "ext4"]
    assert out(vm_a, "lsblk -no PARTLABEL,LABEL /dev/vdb1").split() == ["docker", "docker"]
    assert out(vm_a, "systemctl is-enabled var-lib-docker.mount") == "enabled"
    assert out(vm_a, "docker info -f '{{.DockerRootDir}}'") == "/var/lib/docker"
    show = "systemctl show --value -p"
    mounted = out(vm_a, f"{show} ActiveEnterTimestampMonotonic var-lib-docker.mount")
    engine = out(vm_a, f"{show} ExecMainStartTimestampMonotonic docker.service")
    assert 0 < int(mounted) < int(engine)
    disk_a["uuid"] = out(vm_a, "blkid -s UUID -o value /dev/vdb1")


def test_declared_container_runs_from_the_baked_archive(vm_a: KeelVM) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        health = vm_a.run("docker inspect -f '{{.State.Health.Status}}' counter").stdout.strip()
        if health == "healthy":
            break
        time.sleep(3)
    assert health == "healthy", out(vm_a, "systemctl status keel-container@counter | cat")
    assert out(vm_a, "systemctl is-active keel-container@counter") == "active"
    assert out(vm_a, "docker exec counter cat /data/starts | wc -l") == "1"
    mount = json.loads(out(vm_a, "docker inspect -f '{{json .Mounts}}' counter"))
    assert mount[0]["Name"] == "counter-data"
    assert mount[0]["Source"].startswith("/var/lib/docker/volumes/")
    identity_a["engine"] = out(vm_a, "docker info --format '{{.ID}}'")
    # AppArmor confines the container; logs rotate (daemon.json).
    assert out(vm_a, "docker inspect -f '{{.AppArmorProfile}}' counter") == "docker-default"
    assert out(vm_a, "docker inspect -f '{{.HostConfig.LogConfig.Config}}' counter") == (
        "map[max-file:3 max-size:10m]"
    )


def test_preloaded_image_runs_without_network(vm_a: KeelVM) -> None:
    result = out(vm_a, f"docker run --rm --network none {DEFAULT_TAG} sh -c 'ls /sys/class/net'")
    assert result.split() == ["lo"]


def test_docker_cli_here_drives_the_guest_over_ssh(vm_a: KeelVM, tmp_path: Path) -> None:
    started = time.monotonic()
    result = docker_over_ssh(
        image_docker_client(DEFINITION), vm_a, tmp_path,
        "run", "--rm", DEFAULT_TAG, "echo", "hello over ssh",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello over ssh"
    print(f"docker -H ssh:// run: {time.monotonic() - started:.1f}s")


def test_tcp_endpoint_needs_a_client_certificate(
    vm_a: KeelVM, rt_image: Path, tmp_path: Path
) -> None:
    client = rt_image / "docker-tls"
    sftp = paramiko_sftp(vm_a)
    # Pin the host as a client would: fetch its own certificate over SSH, which
    # authenticated the host, and trust that certificate alone.
    pinned = tmp_path / "server-cert.pem"
    sftp.get(SERVER_CERT, str(pinned))
    server = x509.load_pem_x509_certificate(pinned.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert out(vm_a, "uname -n") in names.get_values_for_type(x509.DNSName)
    server.verify_directly_issued_by(server)
    identity_a["docker tls"] = server.fingerprint(hashes.SHA256()).hex()
    # The key is this machine's: made on its first boot, on the /etc overlay (on /var).
    assert out(vm_a, f"stat -c '%a %U' {SERVER_KEY}") == "600 root"
    assert vm_a.run(f"test -f /var/lib/keel/etc/upper/{SERVER_KEY.removeprefix('/etc/')}"
                    ).exit_status == 0  # fmt: skip
    assert out(vm_a, "systemctl is-active keel-docker-tls.service") == "active"
    vm_a.run("mkdir -p /tmp/tls", check=True)
    for name in ("cert.pem", "key.pem", "client-ca.pem"):
        sftp.put(str(client / name), f"/tmp/tls/{name}")
    sftp.put(str(pinned), "/tmp/tls/pinned.pem")
    # Another machine's certificate, made as the first boot makes one: same names,
    # same subject, its own key.
    vm_a.run("/usr/lib/keel/docker-tls-keygen /tmp/tls/other-host", check=True)
    tls = "--tlsverify --tlscert /tmp/tls/cert.pem --tlskey /tmp/tls/key.pem"
    version = f"-H {ENDPOINT} version -f '{{{{.Server.Version}}}}'"
    assert out(vm_a, f"docker {tls} --tlscacert /tmp/tls/pinned.pem {version}")
    for wrong_ca in ("other-host/server-cert.pem", "client-ca.pem"):
        refused = vm_a.run(f"docker {tls} --tlscacert /tmp/tls/{wrong_ca} {version}")
        assert refused.exit_status != 0, wrong_ca
        assert "certificate signed by unknown authority" in refused.stderr, refused.stderr
    plain = vm_a.run(f"docker -H {ENDPOINT} version -f '{{{{.Server.Version}}}}'")
    assert plain.exit_status != 0
    no_cert = vm_a.run(f"docker --tlsverify --tlscacert /tmp/tls/pinned.pem -H {ENDPOINT} ps")
    assert no_cert.exit_status != 0


def login(port: int, key: Path, user: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username=user, key_filename=str(key),
                   look_for_keys=False, allow_agent=False, timeout=30)  # fmt: skip
    return client


def paramiko_sftp(vm: KeelVM) -> paramiko.SFTPClient:
    return login(vm.ssh_port, vm.key, "root").open_sftp()


# --- second boot of rt-a -----------------------------------------------------------


def test_after_a_reboot_etc_and_volumes_persist_and_nothing_is_reapplied(
    vm_a: KeelVM, content_server: Served
) -> None:
    vm_a.run("echo kept > /etc/keel-test/marker && echo changed > /etc/keel-test/greeting.txt",
             check=True)  # fmt: skip
    state_before = out(vm_a, "cat /var/lib/keel/provisioned.json")
    started = time.monotonic()
    vm_a.reboot_and_wait(timeout=BOOT_TIMEOUT)
    print(f"rt-a reboot: {time.monotonic() - started:.0f}s")
    assert out(vm_a, "cat /etc/keel-test/marker") == "kept"
    # Provisioning ran once: the state file is the first boot's and the file it wrote
    # keeps the local change.
    assert out(vm_a, "cat /var/lib/keel/provisioned.json") == state_before
    assert out(vm_a, "cat /etc/keel-test/greeting.txt") == "changed"
    assert "ConditionResult=no" in out(vm_a, "systemctl show -p ConditionResult keel-provision")
    assert out(vm_a, "cat /var/lib/keel-test/runs").splitlines() == ["ran", "ran"]  # unit enabled
    # The script the config put in /usr/local/bin is on /var: kept, and it ran again.
    assert out(vm_a, "cat /usr/local/bin/keel-test-hello").startswith("#!/bin/sh")
    deadline = time.monotonic() + 180
    starts = ""
    while time.monotonic() < deadline:
        starts = vm_a.run("docker exec counter cat /data/starts").stdout
        if len(starts.splitlines()) >= 2:
            break
        time.sleep(3)
    assert len(starts.splitlines()) == 2, starts  # the first boot's line is still there
    # Nothing applied twice: one user and group each, the same filesystem on the
    # second disk (not formatted again; the container's volume above is on it), no
    # second fetch, and the kernel arguments once, now in force.
    assert out(vm_a, "grep -c '^ops:' /etc/passwd") == "1"
    assert out(vm_a, "grep -c '^ops-team:' /etc/group") == "1"
    assert out(vm_a, "findmnt -no SOURCE /var/lib/docker") == "/dev/vdb1"
    assert out(vm_a, "blkid -s UUID -o value /dev/vdb1") == disk_a["uuid"]
    assert content_server.requests == ["/fetched.txt"]
    cmdline = out(vm_a, "cat /proc/cmdline").split()
    assert cmdline.count("keel.test=provisioned") == 1
    assert "transparent_hugepage=never" not in cmdline
    assert out(vm_a, "cat /etc/machine-id") == identity_a["machine-id"]
    # The keys made on the first boot are kept: keel-ssh-keygen runs on every boot and
    # keeps keys that load; keel-docker-tls is done once its key exists.
    assert out(vm_a, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub") == identity_a["host key"]
    assert out(vm_a, "systemctl is-active keel-ssh-keygen.service") == "active"
    assert docker_tls_fingerprint(out(vm_a, f"cat {SERVER_CERT}")) == identity_a["docker tls"]
    assert "ConditionResult=no" in out(vm_a, "systemctl show -p ConditionResult keel-docker-tls")


# --- rt-b: same image, a refused config ----------------------------------------------


def test_second_vm_refuses_a_bad_config_stays_reachable_and_has_its_own_identity(
    vm_a: KeelVM, rt_image: Path, tmp_path: Path
) -> None:
    assert len(identity_a) == 4, "run the whole module: rt-b is compared with rt-a"
    vm_a.stop()  # one VM at a time
    config = tmp_path / "bad.ign"
    config.write_text(json.dumps(BAD_CONFIG))
    name = f"rt-b-{secrets.token_hex(2)}"
    options = runner.RunOptions(image=rt_image, name=name, config=config,
                                boot_timeout=BOOT_TIMEOUT, die_with_parent=True)  # fmt: skip
    # The VM key was in the refused config, so SSH logins cannot work: start QEMU
    # through the runner in the background and check the machine on its console.
    outcome: dict[str, Any] = {}

    def boot() -> None:
        try:
            outcome["vm"] = runner.start(options, vm_root())
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=boot, daemon=True)
    thread.start()
    folder = vm_dir(vm_root(), name)
    try:
        shell = wait_for_debug_shell(folder.debug_socket, BOOT_TIMEOUT)
        state = wait_for_json(shell, "/var/lib/keel/provisioned.json", 300)
        assert state["result"] == "failed"
        assert "storage.luks" in state["error"]
        journal = shell.run("journalctl -b -u keel-provision -o cat", timeout=60).output
        assert "was NOT applied" in journal and "storage.luks" in journal
        assert "was NOT applied" in folder.serial_log.read_text(errors="replace")
        # Reachable: the boot went on, sshd answers (no key can log in: none was applied).
        wait_until(lambda: shell.run("systemctl is-active ssh").output.strip() == "active", 120)
        # sshd re-executes per connection; under TCG on a loaded host one 10 s probe
        # can come back empty although it listens, so give it a few.
        wait_until(lambda: ssh.banner_answers(port_of(folder)), 120)
        wait_until(lambda: "healthy" in shell.run(
            "docker inspect -f '{{.State.Health.Status}}' counter").output, 240)  # fmt: skip
        identity_b = {
            "machine-id": shell.run("cat /etc/machine-id").output.strip(),
            "host key": shell.run(
                "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
            ).output.strip(),
            "engine": shell.run("docker info --format '{{.ID}}'", timeout=60).output.strip(),
            "docker tls": docker_tls_fingerprint(shell.run(f"cat {SERVER_CERT}").output),
        }
        for what, value in identity_b.items():
            assert value and value != identity_a[what], what
    finally:
        runner.stop(folder, hard=True)
        thread.join(timeout=60)
        shutil.rmtree(folder.path, ignore_errors=True)


def docker_tls_fingerprint(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def port_of(folder: Any) -> int:
    return int(json.loads(folder.state_file.read_text())["ssh_port"])


def wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:.0f}s: {check}")
        time.sleep(3)


def wait_for_debug_shell(path: Path, timeout: float) -> DebugShell:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                shell = DebugShell(path)
                if shell.run("true", timeout=20).exit_status == 0:
                    return shell
            except Exception:
                pass
        time.sleep(3)
    raise AssertionError(f"no debug shell on {path} within {timeout:.0f}s")


def wait_for_json(shell: DebugShell, path: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = shell.run(f"cat {path}", timeout=30)
        if result.exit_status == 0:
            return dict(json.loads(result.output))
        time.sleep(3)
    raise AssertionError(f"{path} did not appear within {timeout:.0f}s")
