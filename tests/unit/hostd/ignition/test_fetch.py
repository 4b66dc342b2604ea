"""http(s) sources, config merge/replace and CAs, against real loopback servers (an
HTTPS one with a CA made here): fetched only at first boot, after validation, with
retries, a deadline and size caps, and nothing written when a fetch fails."""

from __future__ import annotations

import argparse
import base64
import datetime
import gzip
import hashlib
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostd.ignition import fetch
from hostd.ignition import resolve as resolve_module
from hostd.ignition.apply import apply_config
from hostd.ignition.config import ConfigError, parse_config
from hostd.ignition.resolve import resolve
from hostd.provision import STATE_FILE, provision


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    length: bool = True  # send Content-Length (else the body ends when the socket closes)
    trickle: float = 0.0  # seconds between bytes


@dataclass
class Server:
    """Serves routes[path] answers in order (the last one repeats); keeps requests."""

    routes: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str) -> Answer:
        answers = self.routes.get(path) or [Answer(404)]
        return answers.pop(0) if len(answers) > 1 else answers[0]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append((self.path, dict(self.headers.items())))
            answer = server.answer(self.path)
            self.send_response(answer.status)
            if answer.length:
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            try:
                if not answer.trickle:
                    self.wfile.write(answer.body)
                for byte in answer.body if answer.trickle else b"":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(answer.trickle)
            except OSError:
                pass  # the client gave up, as it should

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def http() -> Iterator[Server]:
    yield from _serve()


@dataclass(frozen=True)
class Authority:
    pem: bytes
    server: ssl.SSLContext


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA made here and a server certificate for 127.0.0.1 it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("keel test CA"))
        .issuer_name(_name("keel test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return Authority(ca.public_bytes(serialization.Encoding.PEM), context)


@pytest.fixture
def https(authority: Authority) -> Iterator[Server]:
    yield from _serve(authority.server)


def config(files: list[dict[str, Any]] | None = None, **ignition: Any) -> bytes:
    document: dict[str, Any] = {"ignition": {"version": "3.4.0", **ignition}}
    if files:
        document["storage"] = {"files": files}
    return json.dumps(document).encode()


def data_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode()


def sha512(data: bytes) -> str:
    return "sha512-" + hashlib.sha512(data).hexdigest()


def test_http_file_with_sha512_is_fetched_and_applied(tmp_path: Path, http: Server) -> None:
    http.routes["/motd"] = [Answer(body=b"hello\n")]
    raw = config([{"path": "/etc/motd", "contents": {
        "source": f"{http.url}/motd", "verification": {"hash": sha512(b"hello\n")}}}])  # fmt: skip
    apply_config(tmp_path, resolve(raw))
    assert (tmp_path / "etc/motd").read_bytes() == b"hello\n"


def test_gzip_and_append_from_http(tmp_path: Path, http: Server) -> None:
    http.routes["/a.gz"] = [Answer(body=gzip.compress(b"a\n"))]
    http.routes["/b"] = [Answer(body=b"b\n")]
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/a.gz",
                   "compression": "gzip", "verification": {"hash": sha512(b"a\n")}},
                   "append": [{"source": f"{http.url}/b"}]}])  # fmt: skip
    apply_config(tmp_path, resolve(raw))
    assert (tmp_path / "etc/a").read_bytes() == b"a\nb\n"


def _provision(root: Path, raw: bytes) -> dict[str, Any]:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "usr/lib/keel").mkdir(parents=True)
    (root / "usr/lib/keel/provision.ign").write_bytes(raw)
    return provision(root)


def test_hash_mismatch_is_refused_and_nothing_is_written(tmp_path: Path, http: Server) -> None:
    http.routes["/motd"] = [Answer(body=b"tampered\n")]
    raw = config([
        {"path": "/etc/first", "contents": {"source": "data:,ok"}},
        {"path": "/etc/motd", "contents": {
            "source": f"{http.url}/motd", "verification": {"hash": sha512(b"hello\n")}}},
    ])  # fmt: skip
    state = _provision(tmp_path, raw)
    assert state["result"] == "failed"
    assert "storage.files[1].contents.verification.hash" in state["error"]
    assert json.loads((tmp_path / STATE_FILE).read_text())["result"] == "failed"
    assert not (tmp_path / "etc/first").exists()
    assert not (tmp_path / "etc/motd").exists()


def test_https_needs_the_configs_ca(tmp_path: Path, https: Server, authority: Authority) -> None:
    https.routes["/a"] = [Answer(body=b"secret\n")]
    files = [{"path": "/etc/a", "contents": {"source": f"{https.url}/a"}}]
    with pytest.raises(ConfigError, match=r"storage\.files\[0\]\.contents\.source.*TLS"):
        resolve(config(files), deadline=10)
    assert len(https.requests) == 0  # refused at the handshake, and not retried
    tls = {"tls": {"certificateAuthorities": [{"source": data_url(authority.pem)}]}}
    apply_config(tmp_path, resolve(config(files, security=tls)))
    assert (tmp_path / "etc/a").read_bytes() == b"secret\n"


def test_ca_fetched_over_http_with_verification(
    tmp_path: Path, http: Server, https: Server, authority: Authority
) -> None:
    http.routes["/ca.pem"] = [Answer(body=authority.pem)]
    https.routes["/a"] = [Answer(body=b"x")]
    ca = {"source": f"{http.url}/ca.pem", "verification": {"hash": sha512(authority.pem)}}
    raw = config([{"path": "/etc/a", "contents": {"source": f"{https.url}/a"}}],
                 security={"tls": {"certificateAuthorities": [ca]}})  # fmt: skip
    apply_config(tmp_path, resolve(raw))
    assert (tmp_path / "etc/a").read_bytes() == b"x"


def test_http_headers_are_sent(tmp_path: Path, http: Server) -> None:
    http.routes["/a"] = [Answer(body=b"x")]
    headers = [{"name": "Authorization", "value": "Bearer t0ken"}, {"name": "X-Y", "value": "z"}]
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/a",
                                                  "httpHeaders": headers}}])  # fmt: skip
    apply_config(tmp_path, resolve(raw))
    sent = http.requests[0][1]
    assert sent["Authorization"] == "Bearer t0ken"
    assert sent["X-Y"] == "z"


def test_headers_need_spec_3_1_and_an_http_source() -> None:
    entry = {"source": "data:,x", "httpHeaders": [{"name": "A", "value": "b"}]}
    with pytest.raises(ConfigError, match=r"httpHeaders' is only for http"):
        parse_config(config([{"path": "/etc/a", "contents": entry}]))
    raw = json.dumps(
        {
            "ignition": {"version": "3.0.0"},
            "storage": {
                "files": [
                    {"path": "/etc/a", "contents": {"source": "http://h/a", "httpHeaders": []}}
                ]
            },
        }
    )
    with pytest.raises(ConfigError, match=r"needs ignition\.version 3\.1\.0"):
        parse_config(raw.encode())


def test_5xx_is_retried(tmp_path: Path, http: Server) -> None:
    http.routes["/a"] = [Answer(503), Answer(503), Answer(body=b"third time")]
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/a"}}])
    apply_config(tmp_path, resolve(raw, deadline=20))
    assert (tmp_path / "etc/a").read_bytes() == b"third time"
    assert len(http.requests) == 3


def test_404_fails_at_once(http: Server) -> None:
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/missing"}}])
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"contents\.source.*404"):
        resolve(raw, deadline=20)
    assert time.monotonic() - started < fetch.INITIAL_BACKOFF
    assert len(http.requests) == 1


def test_trickling_server_hits_the_deadline(http: Server) -> None:
    http.routes["/slow"] = [Answer(body=b"x" * 100, trickle=0.1)]
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/slow"}}])
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"timed out"):
        resolve(raw, deadline=0.8)
    assert time.monotonic() - started < 3


def test_unreachable_server_gives_up_at_the_deadline() -> None:
    raw = config([{"path": "/etc/a", "contents": {"source": "http://127.0.0.1:9/a"}}])
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"out of time"):
        resolve(raw, deadline=0.7)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("length", [True, False])
def test_oversized_body_is_refused(
    http: Server, monkeypatch: pytest.MonkeyPatch, length: bool
) -> None:
    monkeypatch.setattr(resolve_module, "MAX_FILE_BYTES", 1000)
    http.routes["/big"] = [Answer(body=b"x" * 5000, length=length)]
    raw = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/big"}}])
    with pytest.raises(ConfigError, match=r"more than 1000 bytes|at most 1000"):
        resolve(raw, deadline=10)
    assert len(http.requests) == 1  # too big is not retried


def test_config_replace_from_http(tmp_path: Path, http: Server) -> None:
    child = config([{"path": "/etc/child", "contents": {"source": f"{http.url}/c"}}])
    http.routes["/child.ign"] = [Answer(body=child)]
    http.routes["/c"] = [Answer(body=b"from the child")]
    raw = config(
        [{"path": "/etc/parent", "contents": {"source": "data:,x"}}],
        config={"replace": {"source": f"{http.url}/child.ign",
                            "verification": {"hash": sha512(child)}}},
    )  # fmt: skip
    apply_config(tmp_path, resolve(raw))
    assert (tmp_path / "etc/child").read_bytes() == b"from the child"
    assert not (tmp_path / "etc/parent").exists()  # replaced, not merged


def test_config_merge_from_http_in_order(tmp_path: Path, http: Server) -> None:
    first = config([{"path": "/etc/a", "contents": {"source": "data:,first"}},
                    {"path": "/etc/b", "contents": {"source": "data:,b"}}])  # fmt: skip
    second = config([{"path": "/etc/a", "contents": {"source": f"{http.url}/a"}}])
    http.routes["/1.ign"] = [Answer(body=first)]
    http.routes["/2.ign"] = [Answer(body=second)]
    http.routes["/a"] = [Answer(body=b"second")]
    raw = config(
        [{"path": "/etc/a", "contents": {"source": "data:,parent"}, "mode": 384}],
        config={"merge": [{"source": f"{http.url}/1.ign"}, {"source": f"{http.url}/2.ign"}]},
    )
    resolved = resolve(raw)
    assert [f.path for f in resolved.files] == ["/etc/a", "/etc/b"]
    apply_config(tmp_path, resolved)
    assert (tmp_path / "etc/a").read_bytes() == b"second"  # the last merged wins
    assert (tmp_path / "etc/a").stat().st_mode & 0o777 == 0o600  # the parent's mode stays
    assert (tmp_path / "etc/b").read_bytes() == b"b"


def test_a_referenced_config_is_validated(http: Server) -> None:
    http.routes["/bad.ign"] = [Answer(body=config([{"path": "/usr/bin/x"}]))]
    raw = config(config={"merge": [{"source": f"{http.url}/bad.ign"}]})
    with pytest.raises(ConfigError, match=r"ignition\.config\.merge\[0\].*refused"):
        resolve(raw)


def test_parsing_and_config_check_never_fetch(tmp_path: Path, http: Server) -> None:
    from composer.provisioning.cli import cmd_config_check

    http.routes["/a"] = [Answer(body=b"x")]
    raw = config(
        [{"path": "/etc/a", "contents": {"source": f"{http.url}/a"}}],
        config={"merge": [{"source": f"{http.url}/a"}]},
        security={"tls": {"certificateAuthorities": [{"source": f"{http.url}/a"}]}},
    )
    parsed = parse_config(raw)
    assert parsed.remote and parsed.files[0].contents == b""
    with pytest.raises(ConfigError, match=r"not fetched"):
        apply_config(tmp_path, parsed)  # placeholders are never written
    path = tmp_path / "config.ign"
    path.write_bytes(raw)
    assert cmd_config_check(argparse.Namespace(file=str(path), files_dir=None)) == 0
    assert http.requests == []


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("s3://bucket/key", "cloud"),
        ("gs://bucket/key", "cloud"),
        ("arn:aws:s3:::bucket/key", "cloud"),
        ("tftp://host/key", "network"),
        ("http://user:pw@host/a", "credentials"),
        ("http:///a", "no host"),
    ],
)
def test_other_sources_are_refused_by_field(source: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(config([{"path": "/etc/a", "contents": {"source": source}}]))
    assert "field 'storage.files[0].contents.source'" in str(error.value)
    assert reason in str(error.value)
