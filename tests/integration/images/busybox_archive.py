"""A container image for the tests, made without a registry or a Docker engine: Debian's
busybox-static (fetched with apt-get download, unpacked with dpkg-deb) in one layer,
written in the `docker save` archive format (manifest.json, image config, layer tar),
which `docker load` reads.

    python tests/integration/images/busybox_archive.py OUT.tar [TAG]"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEFAULT_TAG = "keel-test/busybox:1"
# Applets the tests use, as links to /bin/busybox (busybox --install needs a running
# busybox; a fixed list keeps the archive reproducible).
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "mkdir", "date", "true", "wc", "ip", "hostname",
           "ping", "wget", "nc", "id", "env", "grep", "touch", "rm")  # fmt: skip
EPOCH = 0


def _info(name: str, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.uname = info.gname = "root"
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def fetch_busybox(workdir: Path) -> bytes:
    """The static busybox binary from Debian's busybox-static package."""
    subprocess.run(["apt-get", "download", "-qq", "busybox-static"], cwd=workdir, check=True,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    deb = next(workdir.glob("busybox-static_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
    return (workdir / "root/bin/busybox").read_bytes()


def layer_tar(busybox: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("bin", "data", "tmp", "etc"):
            tar.addfile(_info(folder, type=tarfile.DIRTYPE, mode=0o1777 if folder == "tmp"
                              else 0o755))  # fmt: skip
        tar.addfile(_info("bin/busybox", size=len(busybox), mode=0o755), io.BytesIO(busybox))
        for applet in APPLETS:
            tar.addfile(_info(f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox"))
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        tar.addfile(_info("etc/passwd", size=len(passwd), mode=0o644), io.BytesIO(passwd))
    return buffer.getvalue()


def docker_archive(busybox: bytes, tag: str) -> bytes:
    layer = layer_tar(busybox)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "Debian busybox-static, packed by Keel's tests"}],
    }  # fmt: skip
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_info(diff_id, type=tarfile.DIRTYPE, mode=0o755))
        for name, data in (
            (f"{diff_id}/layer.tar", layer),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            tar.addfile(_info(name, size=len(data), mode=0o644), io.BytesIO(data))
    return buffer.getvalue()


def make_busybox_archive(dest: Path, tag: str = DEFAULT_TAG) -> Path:
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory() as workdir:
        data = docker_archive(fetch_busybox(Path(workdir)), tag)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    partial.rename(dest)
    return dest


if __name__ == "__main__":
    print(make_busybox_archive(Path(sys.argv[1]), *(sys.argv[2:3] or [DEFAULT_TAG])))
