"""RFC 2397 data: URLs, the only content source a first-boot config can use offline."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes

# The whole config is capped (document.MAX_CONFIG_BYTES); this bounds a URL handed
# in by other callers (the build side) the same way.
MAX_URL_CHARS = 16 * 1024 * 1024


class DataUrlError(ValueError):
    pass


def decode_data_url(url: str) -> bytes:
    """The bytes a data: URL carries (base64 or percent-encoded)."""
    if not isinstance(url, str):
        raise DataUrlError("a data: URL must be a string")
    if len(url) > MAX_URL_CHARS:
        raise DataUrlError(f"the data: URL is longer than {MAX_URL_CHARS} characters")
    if not url[:5].lower() == "data:":
        raise DataUrlError("only data: URLs are supported (no network at first boot)")
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise DataUrlError("a data: URL needs a ',' before its payload")
    try:
        raw = payload.encode("ascii")  # RFC 2397: other characters are %-escaped
    except UnicodeEncodeError:
        try:  # tolerated as UTF-8 text, as browsers do; lone surrogates are not text
            raw = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise DataUrlError("the data: URL holds a lone surrogate") from None
    parameters = header.split(";")
    if parameters[-1].strip().lower() == "base64":
        try:
            return base64.b64decode(unquote_to_bytes(raw), validate=True)
        except (binascii.Error, ValueError) as error:
            raise DataUrlError(f"bad base64 payload: {error}") from None
    return unquote_to_bytes(raw)


def encode_data_url(data: bytes) -> str:
    """A data: URL for data: percent-encoded when that is readable, else base64."""
    from urllib.parse import quote

    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "data:;base64," + base64.b64encode(data).decode()
    return "data:," + quote(text, safe="")
