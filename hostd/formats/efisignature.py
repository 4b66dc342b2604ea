"""Whether the firmware will start a unified kernel image: the certificates in its db
variable against the signature the image carries.

Under Secure Boot the firmware refuses an image that no db certificate signed, and
then systemd-boot gives up and the machine stops in the firmware: no counter runs
down, no rollback happens, someone has to come. So before installing an update's
kernel image hostd checks that it carries an Authenticode signature whose
certificates include one of db's. That catches what goes wrong in practice (a
version built without `--keys`, or with another owner's keys); the signature itself
is the firmware's to check (TUF already vouched for the bundle's bytes, and hostd
has no crypto library on the host).

Formats: PE/COFF's certificate table (data directory 4, a file offset and size) of
WIN_CERTIFICATE entries, whose PKCS#7 SignedData embeds the signer's certificate;
and UEFI's EFI_SIGNATURE_LIST, one after another in the db variable after its
4 attribute bytes, X.509 entries being an owner GUID then the DER certificate."""

from __future__ import annotations

import struct
import uuid
from typing import IO

X509_TYPE = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
PKCS_SIGNED_DATA = 0x0002  # WIN_CERT_TYPE_PKCS_SIGNED_DATA
PE32_PLUS = 0x20B
SECURITY_DIRECTORY = 4
MAX_SIGNATURES = 1024 * 1024  # a certificate table larger than this is not a signature


class SignatureError(Exception):
    """The file is not a PE image, or its certificate table is malformed."""


def _read_at(stream: IO[bytes], offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = stream.read(size)
    if len(data) != size:
        raise SignatureError(f"the file ends before byte {offset + size}")
    return data


def signatures(stream: IO[bytes]) -> list[bytes]:
    """The PKCS#7 blobs of a PE image's certificate table (none: unsigned)."""
    if _read_at(stream, 0, 2) != b"MZ":
        raise SignatureError("not a PE image (no MZ header)")
    (pe_offset,) = struct.unpack("<I", _read_at(stream, 0x3C, 4))
    if _read_at(stream, pe_offset, 4) != b"PE\0\0":
        raise SignatureError("not a PE image (no PE signature)")
    optional = pe_offset + 24
    (magic,) = struct.unpack("<H", _read_at(stream, optional, 2))
    if magic != PE32_PLUS:
        raise SignatureError(f"not a 64-bit PE image (optional header magic {magic:#x})")
    # PE32+: the data directories start 112 bytes into the optional header.
    entry = optional + 112 + 8 * SECURITY_DIRECTORY
    (count,) = struct.unpack("<I", _read_at(stream, optional + 108, 4))
    if count <= SECURITY_DIRECTORY:
        return []
    offset, size = struct.unpack("<II", _read_at(stream, entry, 8))
    if size == 0:
        return []
    if size > MAX_SIGNATURES:
        raise SignatureError(f"a certificate table of {size} bytes")
    table = _read_at(stream, offset, size)
    found = []
    position = 0
    while position + 8 <= len(table):
        length, _revision, kind = struct.unpack_from("<IHH", table, position)
        if length < 8 or position + length > len(table):
            raise SignatureError("a malformed certificate table entry")
        if kind == PKCS_SIGNED_DATA:
            found.append(table[position + 8 : position + length])
        position += (length + 7) // 8 * 8  # entries are 8-byte aligned
    return found


def db_certificates(variable: bytes) -> list[bytes]:
    """The DER X.509 certificates in a db variable as efivarfs shows it."""
    data = variable[4:]
    found = []
    position = 0
    while position + 28 <= len(data):
        kind = uuid.UUID(bytes_le=data[position : position + 16])
        list_size, header_size, entry_size = struct.unpack_from("<III", data, position + 16)
        if list_size < 28 or position + list_size > len(data):
            break  # a malformed list: what came before stays usable
        if kind == X509_TYPE and entry_size > 16:
            start = position + 28 + header_size
            for entry in range(start, position + list_size - entry_size + 1, entry_size):
                found.append(data[entry + 16 : entry + entry_size])
        position += list_size
    return found


def signed_by_one_of(stream: IO[bytes], certificates: list[bytes]) -> bool:
    """Whether a signature of the image embeds one of certificates (DER)."""
    return any(cert in blob for blob in signatures(stream) for cert in certificates if cert)
