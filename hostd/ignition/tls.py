"""The TLS context for https fetches: the system's CAs plus the config's
ignition.security.tls.certificateAuthorities. Verification is never turned off: an
extra CA can only add trust for servers it signed.

ssl is imported when a config names a CA, not with the module (see fetch.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


def pem_problem(data: bytes) -> str | None:
    """Why data is not a PEM bundle of CA certificates (None: it is one)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "a CA must be PEM text (-----BEGIN CERTIFICATE-----)"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return "a CA must be PEM text (-----BEGIN CERTIFICATE-----)"
    import ssl

    try:  # a context of its own: checking must not depend on the system's CAs
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:
        return f"not a valid PEM certificate: {error}"
    return None


def context(authorities: list[bytes]) -> ssl.SSLContext:
    """The system's CAs plus authorities (each already checked by pem_problem)."""
    import ssl

    made = ssl.create_default_context()  # CERT_REQUIRED and hostname checks
    for pem in authorities:
        made.load_verify_locations(cadata=pem.decode("ascii"))
    return made
