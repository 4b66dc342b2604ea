"""Build step and check: no private key in an image.

Everything in the root image is public: it is in every disk image and every update
bundle, and a bundle is published for any host to fetch. A private key there is every
host's key and anyone's, so keys are made on the machine at first boot (SSH host keys,
the Docker TLS server key) and the build refuses a tree that holds one.

What counts as a private key: a PEM block whose label ends in PRIVATE KEY (PKCS#8,
encrypted PKCS#8, RSA, EC, DSA, and OpenSSH's own format) with a body that decodes to
a key structure, also when the block sits JSON-escaped inside a file (a baked
Ignition config); and a PuTTY key file. Markers alone, as ssh-keygen and libraries
carry them in their code, do not count. Compiled code (ELF programs and libraries, ar
archives of them) is not searched: a key in it comes from its package's source and is
the same in every copy, such as the self-test keys GnuTLS carries (and apt brings
GnuTLS into every image). Keys in other encodings (DER files, base64 data URLs,
compressed archives inside the image) are not recognised.

Images are scanned as what they hold, never as raw compressed bytes, which would hide
everything: an erofs image is extracted (fsck.erofs), an initrd is decompressed into
its cpio archives, which store files verbatim, and a bundle's root image is
decompressed (zstd) and extracted. A kernel is scanned as it is: Debian's carry no
built-in initramfs, so no file of the tree can be inside one."""

from __future__ import annotations

import base64
import binascii
import mmap
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.build import uki
from composer.core import commands
from composer.core.errors import KeelError
from hostd.formats import bundle as bundle_format
from hostd.formats.sizes import MIB

if TYPE_CHECKING:
    from composer.build.context import BuildContext

PEM_MARK = b"PRIVATE KEY-----"
# The BEGIN line just before a PEM_MARK, with the label's leading words ("EC ").
_PEM_BEGIN = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)\Z")
# RFC 1421 headers of an encrypted PEM block ("Proc-Type: 4,ENCRYPTED").
_PEM_HEADER = re.compile(rb"[A-Za-z-]+: [^\r\n\\]*")
PEM_ENCRYPTED = b"Proc-Type: 4,ENCRYPTED"
# Line breaks as they are, or escaped inside a JSON or YAML string.
_BREAKS = re.compile(rb"\s+|\\[nr]")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
# An Ed25519 key in PKCS#8 is 64 base64 characters, the smallest there is.
MIN_BODY = 64
# A 16384-bit RSA key in PEM is about 13 KB.
MAX_PEM = 64 * 1024
OPENSSH_MAGIC = b"openssh-key-v1\0"
DER_SEQUENCE = 0x30
PUTTY_MARK = b"PuTTY-User-Key-File-"
PUTTY_PRIVATE = b"Private-Lines:"
MAX_PUTTY = 64 * 1024

COMPILED_MAGICS = (b"\x7fELF", b"!<arch>\n")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CPIO_MAGICS = (b"070701", b"070702")
CPIO_HEADER = 110
CPIO_TRAILER = b"TRAILER!!!"


@dataclass(frozen=True)
class Finding:
    where: str  # a path in the image, prefixed with the artifact when there is one
    kind: str  # "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "PuTTY private key"

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}"


def _is_key_body(body: bytes) -> bool:
    """True when the text between BEGIN and END is base64 of a key structure: DER (a
    SEQUENCE), OpenSSH's format, or, under an ENCRYPTED header, ciphertext.
    Placeholders such as "..." or "AAAA" in documentation fail."""
    text = _BREAKS.sub(b"", _PEM_HEADER.sub(b"", body))
    if len(text) < MIN_BODY or not _BASE64.fullmatch(text):
        return False
    if PEM_ENCRYPTED in body:
        return True
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4))
    except binascii.Error:
        return False
    return decoded[0] == DER_SEQUENCE or decoded.startswith(OPENSSH_MAGIC)


def _pem_keys(data: bytes | mmap.mmap) -> Iterator[str]:
    position = 0
    while (hit := data.find(PEM_MARK, position)) != -1:
        position = hit + len(PEM_MARK)
        begin = _PEM_BEGIN.search(data[max(0, hit - 64) : hit])
        if begin is None:  # an END line, or a marker without its BEGIN
            continue
        label = begin.group(1) + b"PRIVATE KEY"
        end_line = b"-----END " + label + b"-----"
        end = data.find(end_line, position, position + MAX_PEM)
        if end != -1 and _is_key_body(data[position:end]):
            yield label.decode()
            position = end + len(end_line)


def _putty_keys(data: bytes | mmap.mmap) -> Iterator[str]:
    position = 0
    while (hit := data.find(PUTTY_MARK, position)) != -1:
        position = hit + len(PUTTY_MARK)
        if data.find(PUTTY_PRIVATE, position, position + MAX_PUTTY) != -1:
            yield "PuTTY private key"


def keys_in(data: bytes | mmap.mmap) -> list[str]:
    """The kinds of private key in a buffer, one entry per key."""
    return [*_pem_keys(data), *_putty_keys(data)]


def keys_in_file_content(data: bytes | mmap.mmap) -> list[str]:
    """The private keys in one file's content; none in compiled code."""
    if data[:8].startswith(COMPILED_MAGICS):
        return []
    return keys_in(data)


def _keys_in_file(path: Path) -> list[str]:
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return []
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return keys_in_file_content(data)


def scan_tree(root: Path, under: str = "/") -> list[Finding]:
    """Every private key in the regular files under root (symlinks not followed),
    named by their path in the image: root is mounted at under."""
    findings = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            where = str(Path(under) / path.relative_to(root))
            findings += [Finding(where, kind) for kind in _keys_in_file(path)]
    return findings


def _inside(artifact: str, findings: list[Finding]) -> list[Finding]:
    return [Finding(f"{artifact}:{finding.where}", finding.kind) for finding in findings]


def scan_erofs(image: Path) -> list[Finding]:
    """Every private key in the files of an erofs image, extracted first: its files
    are lz4-compressed inside, where no byte pattern shows."""
    with tempfile.TemporaryDirectory(prefix="keel-keyscan-") as scratch:
        tree = Path(scratch) / "root"
        commands.run(
            ["fsck.erofs", f"--extract={tree}", "--no-preserve", image],
            hint="fsck.erofs comes with the Debian package `erofs-utils`",
        )
        return scan_tree(tree)


def _cpio_archive(data: bytes, start: int) -> Generator[tuple[str, bytes], None, int]:
    """The regular files (path, content) of the uncompressed newc cpio archive at
    start, read header by header; returns where the archive ends, after its trailer."""
    position = start
    while True:
        header = data[position : position + CPIO_HEADER]
        if len(header) < CPIO_HEADER or header[:6] not in CPIO_MAGICS:
            raise KeelError(f"initrd: a damaged cpio archive at offset {position}")
        mode, size = int(header[14:22], 16), int(header[54:62], 16)
        name_start, name_size = position + CPIO_HEADER, int(header[94:102], 16)
        name = data[name_start : name_start + name_size - 1]
        content = _align4(name_start + name_size)
        position = _align4(content + size)
        if name == CPIO_TRAILER:
            return position
        if stat.S_ISREG(mode):
            yield (
                "/" + name.decode(errors="replace").removeprefix("./"),
                data[content : content + size],
            )


def _align4(offset: int) -> int:
    return (offset + 3) & ~3


def initrd_files(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The regular files (path, content) of an initrd: of the cpio archives stored as
    they are (early firmware and microcode), then of the zstd-compressed main one."""
    position = 0
    while position < len(data):
        if data[position] == 0:  # padding between archives
            position += 1
        elif data.startswith(CPIO_MAGICS, position):
            position = yield from _cpio_archive(data, position)
        elif data.startswith(ZSTD_MAGIC, position):
            yield from initrd_files(_unzstd(data[position:]))
            return
        else:
            raise KeelError(
                f"initrd: cannot read what starts at offset {position}",
                hint="Keel's initrds are zstd-compressed (COMPRESS=zstd); another "
                "compression cannot be scanned",
            )


def _unzstd(compressed: bytes) -> bytes:
    # From a file: fed through a pipe, zstd would block on its full output pipe.
    with tempfile.NamedTemporaryFile(prefix="keel-keyscan-") as packed:
        packed.write(compressed)
        packed.flush()
        return commands.run(["zstd", "-dcq", packed.name], capture=True).stdout


def scan_initrd(initrd: Path) -> list[Finding]:
    """Every private key in the files of an initrd."""
    return [
        Finding(path, kind)
        for path, content in initrd_files(initrd.read_bytes())
        for kind in keys_in_file_content(content)
    ]


def scan_uki(efi: Path) -> list[Finding]:
    """Every private key in a unified kernel image: in its bytes, and in the files of
    its initrd (compressed inside it, so unpacked first)."""
    findings = [Finding("", kind) for kind in _keys_in_file(efi)]
    with tempfile.TemporaryDirectory() as scratch:
        initrd = uki.dump_section(efi, ".initrd", Path(scratch) / "initrd.img")
        findings += _inside("initrd.img", scan_initrd(initrd))
    return findings


# The role of each payload member of a bundle: how it is scanned.
BUNDLE_ROLES = {member: role for role, (member, _) in bundle_format.PAYLOAD_MEMBERS.items()}


def scan_bundle(path: Path) -> list[Finding]:
    """Every private key in an update bundle (a tar), member by member, each as the
    host unpacks it; a member of no known role is scanned as it is."""
    findings = []
    with tarfile.open(path, "r:") as tar, tempfile.TemporaryDirectory() as scratch:
        for member in tar.getmembers():
            source = tar.extractfile(member)
            if source is None:
                continue
            packed = Path(scratch) / "member"
            with source, packed.open("wb") as out:
                shutil.copyfileobj(source, out, 4 * MIB)
            findings += _scan_member(packed, BUNDLE_ROLES.get(member.name), member.name)
            packed.unlink()
    return findings


def _scan_member(packed: Path, role: str | None, name: str) -> list[Finding]:
    if name.endswith(".zst"):
        unpacked = packed.with_name("member.unpacked")
        commands.run(["zstd", "-dq", "--force", packed, "-o", unpacked])
        packed.unlink()
        unpacked.rename(packed)
    if role == "root":
        return _inside(name, scan_erofs(packed))
    if role == "uki":
        return _inside(name, scan_uki(packed))
    return [Finding(name, kind) for kind in _keys_in_file(packed)]


def _refuse(findings: list[Finding]) -> None:
    if findings:
        listing = "\n".join(f"  {finding}" for finding in findings)
        raise KeelError(
            "the image would carry private keys, and every disk image and update bundle "
            f"of it would publish them:\n{listing}",
            hint="make per-machine keys on the machine at first boot (as Keel does for "
            "SSH and Docker TLS), or deliver them with a provisioning config at boot "
            "(fw_cfg or the ESP), not one baked into the image",
        )


def step(ctx: BuildContext) -> None:
    """After finalize: the root tree, the var partition's seed and the initrd."""
    findings = scan_tree(ctx.tree)
    findings += scan_tree(ctx.finalized.var_seed, "/var")
    findings += _inside("initrd.img", scan_initrd(ctx.finalized.initrd))
    _refuse(findings)
