"""The few fields of a 64-bit PE/COFF header (an EFI program) that Keel reads: where
sections may go (the build lays out a unified kernel image after its stub) and where
the certificate table is (hostd looks at an update's kernel image signature).

Layout (PE/COFF specification): the "MZ" header's e_lfanew at 0x3C gives the "PE\\0\\0"
signature, then a 20-byte COFF header, then the optional header, PE32+ for x86-64."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO

PE32_PLUS = 0x20B
SECURITY_DIRECTORY = 4


class PeError(Exception):
    """The file is not a 64-bit PE image, or is cut short."""


@dataclass(frozen=True)
class PeHeader:
    image_base: int
    section_alignment: int
    size_of_image: int
    # The certificate table: a file offset and a size (0, 0 when unsigned).
    certificates: tuple[int, int]


def read_at(stream: IO[bytes], offset: int, size: int) -> bytes:
    stream.seek(offset)
    data = stream.read(size)
    if len(data) != size:
        raise PeError(f"the file ends before byte {offset + size}")
    return data


def read_header(stream: IO[bytes]) -> PeHeader:
    if read_at(stream, 0, 2) != b"MZ":
        raise PeError("not a PE image (no MZ header)")
    (pe_offset,) = struct.unpack("<I", read_at(stream, 0x3C, 4))
    if read_at(stream, pe_offset, 4) != b"PE\0\0":
        raise PeError("not a PE image (no PE signature)")
    optional = pe_offset + 24
    (magic,) = struct.unpack("<H", read_at(stream, optional, 2))
    if magic != PE32_PLUS:
        raise PeError(f"not a 64-bit PE image (optional header magic {magic:#x})")
    (image_base,) = struct.unpack("<Q", read_at(stream, optional + 24, 8))
    (section_alignment,) = struct.unpack("<I", read_at(stream, optional + 32, 4))
    (size_of_image,) = struct.unpack("<I", read_at(stream, optional + 56, 4))
    # PE32+: the number of data directories at 108, the directories from 112.
    (count,) = struct.unpack("<I", read_at(stream, optional + 108, 4))
    certificates = (0, 0)
    if count > SECURITY_DIRECTORY:
        entry = optional + 112 + 8 * SECURITY_DIRECTORY
        certificates = struct.unpack("<II", read_at(stream, entry, 8))
    return PeHeader(image_base, section_alignment, size_of_image, certificates)
