"""RFC 2397 data: URLs, the only content source a first-boot config can use offline."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes


class DataUrlError(ValueError):
    pass


def decode_data_url(url: str) -> bytes:
    """The bytes a data: URL carries (base64 or percent-encoded)."""
    if not url.startswith("data:"):
        raise DataUrlError("only data: URLs are supported (no network at first boot)")
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise DataUrlError("a data: URL needs a ',' before its payload")
    parameters = header.split(";")
    if parameters[-1].strip().lower() == "base64":
        try:
            return base64.b64decode(unquote_to_bytes(payload), validate=True)
        except (binascii.Error, ValueError) as error:
            raise DataUrlError(f"bad base64 payload: {error}") from None
    return unquote_to_bytes(payload)


def encode_data_url(data: bytes) -> str:
    """A data: URL for data: percent-encoded when that is readable, else base64."""
    from urllib.parse import quote

    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "data:;base64," + base64.b64encode(data).decode()
    return "data:," + quote(text, safe="")
