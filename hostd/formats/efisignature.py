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

Formats: PE/COFF's certificate table (hostd/formats/pe.py finds it) of WIN_CERTIFICATE
entries, whose PKCS#7 SignedData embeds the signer's certificate;
and UEFI's EFI_SIGNATURE_LIST, one after another in the db variable after its
4 attribute bytes, X.509 entries being an owner GUID then the DER certificate."""

from __future__ import annotations

import struct
import uuid
from typing import IO

from hostd.formats import pe

X509_TYPE = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
PKCS_SIGNED_DATA = 0x0002  # WIN_CERT_TYPE_PKCS_SIGNED_DATA
MAX_SIGNATURES = 1024 * 1024  # a certificate table larger than this is not a signature


class SignatureError(Exception):
    """The file is not a PE image, or its certificate table is malformed."""


def signatures(stream: IO[bytes]) -> list[bytes]:
    """The PKCS#7 blobs of a PE image's certificate table (none: unsigned)."""
    try:
        offset, size = pe.read_header(stream).certificates
        if size > MAX_SIGNATURES:
            raise SignatureError(f"a certificate table of {size} bytes")
        table = pe.read_at(stream, offset, size) if size else b""
    except pe.PeError as error:
        raise SignatureError(str(error)) from None
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
