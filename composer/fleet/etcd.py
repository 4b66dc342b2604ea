"""A small etcd v3 client over etcd's JSON gateway (grpc-gateway), standard library only.

etcd serves its v3 API as JSON on the client URL (POST /v3/kv/range, /v3/kv/txn;
keys and values base64, 64-bit numbers as strings, fields at their default left out).
The FleetLock server needs two calls of it: read one key with its version, and put a
key if its version is still the one read. docs/fleet.md says why this and not a
library (the PyPI gRPC clients are unmaintained, etcd3gw pulls in more than it adds).

Several endpoints may be given: each call tries them in order until one answers."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 5.0
MAX_ANSWER = 4 * 1024 * 1024


class EtcdError(Exception):
    pass


def tls_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """For https endpoints: etcd's CA (else the system's), and a client certificate
    when etcd asks for one (--client-cert-auth)."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise EtcdError(f"etcd TLS files: {error}") from None
    return context


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    version: int  # 0 when the key does not exist
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes

    def request(self) -> dict[str, Any]:
        return {"request_put": {"key": _b64(self.key), "value": _b64(self.value)}}


class Etcd:
    def __init__(
        self,
        urls: str | list[str],
        timeout: float = TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        endpoints = [urls] if isinstance(urls, str) else list(urls)
        self.endpoints = [u.strip().rstrip("/") for e in endpoints for u in e.split(",") if u]
        for url in self.endpoints:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise EtcdError(f"etcd endpoint {url!r} is not an http(s) URL")
        if not self.endpoints:
            raise EtcdError("no etcd endpoint given")
        self.timeout = timeout
        self.tls = tls

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST body to path on the first endpoint that answers."""
        errors = []
        for url in self.endpoints:
            try:
                return self._call(url, path, body)
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{url}: {error}")
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    def _call(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = urlsplit(url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout, context=self.tls
            )
        else:
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=self.timeout
            )
        try:
            connection.request(
                "POST",
                parts.path + path,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER + 1)
        finally:
            connection.close()
        if len(raw) > MAX_ANSWER:
            raise EtcdError(f"etcd's answer to {path} is larger than {MAX_ANSWER} bytes")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise EtcdError(f"etcd answered {path} with HTTP {response.status}, not JSON") from None
        if response.status != 200 or not isinstance(data, dict):
            message = data.get("message") or data.get("error") if isinstance(data, dict) else data
            raise EtcdError(f"etcd refused {path}: HTTP {response.status}: {message}")
        return data

    def get(self, key: bytes) -> KeyValue | None:
        data = self.call("/v3/kv/range", {"key": _b64(key)})
        for kv in data.get("kvs") or []:
            return KeyValue(
                base64.b64decode(kv.get("key", "")),
                base64.b64decode(kv.get("value", "")),
                int(kv.get("version", 0)),
                int(kv.get("mod_revision", 0)),
            )
        return None

    def get_prefix(self, prefix: bytes) -> list[KeyValue]:
        end = bytearray(prefix)
        end[-1] += 1  # the prefix's range end: its last byte plus one
        data = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(bytes(end))})
        return [
            KeyValue(
                base64.b64decode(kv.get("key", "")),
                base64.b64decode(kv.get("value", "")),
                int(kv.get("version", 0)),
                int(kv.get("mod_revision", 0)),
            )
            for kv in data.get("kvs") or []
        ]

    def put_if_version(self, key: bytes, version: int, value: bytes) -> bool:
        """Put value at key if the key's version is still version (0: it does not
        exist yet); whether it was put."""
        compare = {
            "key": _b64(key),
            "result": "EQUAL",
            "target": "VERSION",
            "version": str(version),
        }
        data = self.call(
            "/v3/kv/txn", {"compare": [compare], "success": [Put(key, value).request()]}
        )
        return bool(data.get("succeeded", False))
