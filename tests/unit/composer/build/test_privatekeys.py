"""The private-key scanner (composer/build/privatekeys.py) on real keys made by real
tools, inside real erofs images, initrds and bundles; and the build step that refuses
an image holding one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from composer.build import bundle, privatekeys
from composer.build.manifest import file_record
from composer.build.privatekeys import (
    Finding,
    keys_in,
    scan_bundle,
    scan_erofs,
    scan_initrd,
    scan_tree,
)
from composer.core.errors import KeelError
from tests.unit.composer.build.stubs import make_uki

EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: object, form: serialization.PrivateFormat, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)  # type: ignore[attr-defined,no-any-return]


def openssh_key(folder: Path) -> Path:
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    return key


PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL


@pytest.mark.parametrize(
    ("key", "label"),
    [
        (pem(EC_KEY, PKCS8), "PRIVATE KEY"),
        (pem(ed25519.Ed25519PrivateKey.generate(), PKCS8), "PRIVATE KEY"),
        (pem(EC_KEY, TRADITIONAL), "EC PRIVATE KEY"),
        (pem(rsa.generate_private_key(65537, 2048), TRADITIONAL), "RSA PRIVATE KEY"),
        (pem(EC_KEY, PKCS8, b"secret"), "ENCRYPTED PRIVATE KEY"),
        # Proc-Type and DEK-Info headers inside the block.
        (pem(EC_KEY, TRADITIONAL, b"secret"), "EC PRIVATE KEY"),
    ],
    ids=["pkcs8-ec", "pkcs8-ed25519", "ec", "rsa", "encrypted-pkcs8", "encrypted-ec"],
)
def test_pem_private_keys_are_found(key: bytes, label: str) -> None:
    assert keys_in(b"junk before\n" + key + b"junk after") == [label]


def test_openssh_key_made_by_ssh_keygen_is_found(tmp_path: Path) -> None:
    key = openssh_key(tmp_path)
    assert keys_in(key.read_bytes()) == ["OPENSSH PRIVATE KEY"]
    assert keys_in(key.with_suffix(".pub").read_bytes()) == []


def test_a_key_escaped_inside_json_is_found() -> None:
    # A baked Ignition config carrying a key: the PEM's line breaks are "\n" escapes.
    config = json.dumps({"storage": {"files": [{"contents": pem(EC_KEY, PKCS8).decode()}]}})
    assert "\\n" in config
    assert keys_in(config.encode()) == ["PRIVATE KEY"]


def test_putty_key_is_found() -> None:
    putty = (
        b"PuTTY-User-Key-File-3: ssh-ed25519\r\nEncryption: none\r\nComment: x\r\n"
        b"Public-Lines: 2\r\nAAAAC3NzaC1lZDI1NTE5AAAAIB\r\nAAAA\r\n"
        b"Private-Lines: 1\r\nAAAAIGd5\r\nPrivate-MAC: 00\r\n"
    )
    assert keys_in(putty) == ["PuTTY private key"]


def test_markers_certificates_public_keys_and_placeholders_are_not_keys(tmp_path: Path) -> None:
    # ssh-keygen carries "-----BEGIN OPENSSH PRIVATE KEY-----" in its code.
    program = Path(shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen").read_bytes()
    assert b"PRIVATE KEY-----" in program
    assert keys_in(program) == []
    public = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keys_in(public) == []
    placeholder = b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"
    assert keys_in(placeholder) == []
    # A body that is base64 but no key structure (documentation filler).
    filler = b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 64 + b"\n-----END PRIVATE KEY-----\n"
    assert keys_in(filler) == []


def test_tree_scan_names_files_and_skips_links_and_compiled_code(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc/docker/tls").mkdir(parents=True)
    (tree / "etc/docker/tls/server-key.pem").write_bytes(pem(EC_KEY, PKCS8))
    (tree / "etc/docker/tls/server-cert.pem").write_text("not a key\n")
    outside = tmp_path / "outside.pem"
    outside.write_bytes(pem(EC_KEY, PKCS8))
    (tree / "etc/link.pem").symlink_to(outside)
    # A library with a key compiled in, as GnuTLS carries its self-test keys.
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/libselftest.so").write_bytes(b"\x7fELF\x02\x01" + pem(EC_KEY, PKCS8))
    assert scan_tree(tree) == [Finding("/etc/docker/tls/server-key.pem", "PRIVATE KEY")]
    assert scan_tree(tree / "etc", "/etc") == [
        Finding("/etc/docker/tls/server-key.pem", "PRIVATE KEY")
    ]


def test_erofs_image_is_extracted_and_scanned(tmp_path: Path) -> None:
    image = make_erofs(tmp_path, {"etc/ssh/ssh_host_ed25519_key": pem(EC_KEY, PKCS8)})
    assert scan_erofs(image) == [Finding("/etc/ssh/ssh_host_ed25519_key", "PRIVATE KEY")]
    assert scan_erofs(make_erofs(tmp_path / "clean", {"etc/hostname": b"keel\n"})) == []


def test_initrd_files_are_scanned_in_every_archive(tmp_path: Path) -> None:
    early = newc({"kernel/x86/microcode/GenuineIntel.bin": b"microcode"})
    main = newc(
        {
            "etc/dropbear/dropbear_ed25519_host_key.pem": pem(EC_KEY, TRADITIONAL),
            "usr/lib/libselftest.so": b"\x7fELF" + pem(EC_KEY, PKCS8),
            "init": b"#!/bin/sh\n",
        }
    )
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(early + b"\0" * 512 + zstd(main))
    assert scan_initrd(initrd) == [
        Finding("/etc/dropbear/dropbear_ed25519_host_key.pem", "EC PRIVATE KEY")
    ]


def test_initrd_in_an_unknown_compression_is_refused_not_passed(tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"\x1f\x8b\x08\x00gzip data")
    with pytest.raises(KeelError, match="cannot read what starts at offset 0"):
        scan_initrd(initrd)


def test_bundle_members_are_scanned_as_the_host_unpacks_them(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.mkdir()
    make_erofs(tmp_path, {"etc/docker/tls/server-key.pem": pem(EC_KEY, PKCS8)}).rename(
        payload / "root.erofs"
    )
    # The UKI's initrd is compressed inside it: found only if it is unpacked.
    make_uki(payload / "keel.efi", initrd=zstd(newc({"etc/key.pem": pem(EC_KEY, PKCS8)})))
    write_payload_json(payload)
    found = scan_bundle(bundle.write_bundle(payload, tmp_path / "bundle"))
    assert found == [
        Finding("root.erofs.zst:/etc/docker/tls/server-key.pem", "PRIVATE KEY"),
        Finding("keel.efi:initrd.img:/etc/key.pem", "PRIVATE KEY"),
    ]


def test_build_step_refuses_a_tree_with_a_key_and_names_it(tmp_path: Path) -> None:
    tree, seed = tmp_path / "root", tmp_path / "var"
    (tree / "etc").mkdir(parents=True)
    (seed / "lib/app").mkdir(parents=True)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(zstd(newc({"init": b"#!/bin/sh\n"})))
    ctx = SimpleNamespace(tree=tree, finalized=SimpleNamespace(var_seed=seed, initrd=initrd))
    privatekeys.step(ctx)  # type: ignore[arg-type]
    (seed / "lib/app/key.pem").write_bytes(pem(EC_KEY, PKCS8))
    with pytest.raises(KeelError, match=r"/var/lib/app/key\.pem: PRIVATE KEY"):
        privatekeys.step(ctx)  # type: ignore[arg-type]


# --- helpers: real images made with the real tools ------------------------------------


def make_erofs(folder: Path, files: dict[str, bytes]) -> Path:
    tree = folder / "tree"
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    image = folder / "root.erofs"
    subprocess.run(["mkfs.erofs", "-zlz4hc", "--quiet", image, tree], check=True)
    return image


def newc(files: dict[str, bytes]) -> bytes:
    """An uncompressed cpio archive (newc), as the kernel and initramfs-tools read it."""
    out = b""
    for number, (name, content) in enumerate([*files.items(), ("TRAILER!!!", b"")], start=1):
        mode = 0o100644 if content or name != "TRAILER!!!" else 0
        fields = [number, mode, 0, 0, 1, 0, len(content), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        out += pad4(header + name.encode() + b"\0") + pad4(content)
    return out


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def write_payload_json(payload: Path) -> None:
    files = {"root": "root.erofs", "uki": "keel.efi"}
    (payload / "payload.json").write_text(
        json.dumps(
            {
                "format": 1,
                "name": "demo",
                "version": "1.0.0",
                "architecture": "x86-64",
                "kernel_version": "6.1.0-test-amd64",
                "cmdline": [],
                "files": {role: file_record(payload / name) for role, name in files.items()},
            }
        )
    )
