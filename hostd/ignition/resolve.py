"""First boot's fetch step: turn a validated config into the one to apply, fetching
everything it names over http(s) before anything is written.

Order, as Ignition's: the extra CAs and timeouts of the config set up the fetcher;
ignition.config.replace replaces the whole config with the one it names (itself
rendered the same way); else each ignition.config.merge config is rendered and merged
in, in order (merge.py); then the contents of every file are fetched and verified.
Every fetched config is validated by parse_config before it is used, and all fetches
of one config share one deadline. Any failure is a ConfigError naming the field, and
nothing has been written yet. Parsing alone (`keel config check`) never gets here."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from hostd.ignition.config import MAX_TOTAL_BYTES, Config, File, parse_config
from hostd.ignition.contents import MAX_FILE_BYTES, decoded
from hostd.ignition.document import MAX_CONFIG_BYTES, load
from hostd.ignition.errors import ConfigError
from hostd.ignition.fetch import Fetcher, FetchError
from hostd.ignition.merge import merge_documents
from hostd.ignition.references import References, references
from hostd.ignition.remote import Remote
from hostd.ignition.tls import context, pem_problem

# All fetches of one config: a slow or unreachable server fails provisioning (the
# machine still boots, and the reason is recorded) instead of stalling it for ever.
DEFAULT_DEADLINE = 300.0
MAX_CA_BYTES = 1024 * 1024
MAX_DEPTH = 8  # configs referencing configs: a loop must end
MAX_CONFIGS = 32  # referenced configs fetched in all


class _Session:
    """The fetcher, set up from the config being rendered (Ignition switches to each
    referenced config's timeouts and CAs), and the one deadline."""

    def __init__(self, stop: float) -> None:
        self.fetcher = Fetcher(stop)
        self.configs = 0
        self._authorities: dict[str, bytes] = {}  # fetched CAs, by URL

    def setup(self, document: dict[str, Any], version: str) -> References:
        refs = _references(document, version)
        pems: list[bytes] = []
        self.fetcher.tls = None  # CAs are fetched with those loaded before them
        for index, ca in enumerate(refs.authorities):
            field = f"ignition.security.tls.certificateAuthorities[{index}]"
            if isinstance(ca, Remote):
                if ca.url not in self._authorities:
                    self._authorities[ca.url] = self.bytes_of(ca, version, MAX_CA_BYTES)
                data = self._authorities[ca.url]
                if problem := pem_problem(data):
                    raise ConfigError(f"field '{field}': {problem}")
            else:
                data = ca
            pems.append(data)
            self.fetcher.tls = context(pems)
        self.fetcher.response_headers = refs.response_headers
        self.fetcher.total = refs.total
        return refs

    def bytes_of(self, remote: Remote, version: str, limit: int) -> bytes:
        """remote's bytes: fetched, decompressed and verified."""
        field = f"{remote.field}.source"
        headers: list[tuple[str, str]] = []
        for name, value in remote.headers:
            if value is None:
                raise ConfigError(f"field '{remote.field}.httpHeaders': {name} has no value")
            headers.append((name, value))
        try:
            raw = self.fetcher.get(remote.url, tuple(headers), limit)
        except FetchError as error:
            raise ConfigError(f"field '{field}': could not fetch {remote.url}: {error}") from None
        problems: list[str] = []
        data = decoded(raw, remote.compression, remote.hash, remote.field, version, problems)
        if data is None:
            raise ConfigError("; ".join(problems))
        return data


def _references(document: dict[str, Any], version: str) -> References:
    problems: list[str] = []
    refs = references(document, version, problems)
    if problems:  # cannot happen for a validated document; never guess
        raise ConfigError("; ".join(problems))
    return refs


def _version(document: dict[str, Any]) -> str:
    return str(document["ignition"]["version"])


def _referenced(session: _Session, ref: bytes | Remote, field: str, version: str) -> dict[str, Any]:
    """The config ref names, validated as a whole before it is used."""
    session.configs += 1
    if session.configs > MAX_CONFIGS:
        raise ConfigError(f"field '{field}': more than {MAX_CONFIGS} referenced configs")
    raw = session.bytes_of(ref, version, MAX_CONFIG_BYTES) if isinstance(ref, Remote) else ref
    try:
        parse_config(raw)
    except ConfigError as error:
        raise ConfigError(f"field '{field}': the config it names is refused: {error}") from None
    return load(raw)


def _render(session: _Session, document: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ConfigError(f"configs reference configs more than {MAX_DEPTH} levels deep")
    version = _version(document)
    refs = _references(document, version)
    if refs.replace is not None:
        child = _referenced(session, refs.replace, "ignition.config.replace", version)
        session.setup(child, _version(child))
        return _render(session, child, depth + 1)
    merged = document
    for index, ref in enumerate(refs.merge):
        child = _referenced(session, ref, f"ignition.config.merge[{index}]", version)
        # The merged config's CAs and timeouts fetch what the child references.
        preview = merge_documents(merged, child)
        session.setup(preview, _version(preview))
        merged = merge_documents(merged, _render(session, child, depth + 1))
    return merged


def _needs_rendering(config: Config, refs: References) -> bool:
    remote_cas = any(isinstance(ca, Remote) for ca in refs.authorities)
    return bool(config.remote or refs.replace is not None or refs.merge or remote_cas)


def _filled(config: Config, session: _Session) -> Config:
    """config with every http(s) content fetched into its file."""
    files: list[File] = list(config.files)
    for pending in config.remote:
        data = session.bytes_of(pending.remote, config.version, MAX_FILE_BYTES)
        entry = files[pending.file]
        if pending.append is None:
            files[pending.file] = replace(entry, contents=data)
        else:
            append = list(entry.append)
            append[pending.append] = data
            files[pending.file] = replace(entry, append=tuple(append))
    total = sum(len(f.contents or b"") + sum(map(len, f.append)) for f in files)
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(f"the files hold {total} bytes in all; at most {MAX_TOTAL_BYTES}")
    return replace(config, files=tuple(files), remote=())


def resolve(raw: bytes, deadline: float = DEFAULT_DEADLINE) -> Config:
    """The config raw stands for, with everything it references fetched (within
    deadline seconds in all). ConfigError for any problem, before anything is written."""
    config = parse_config(raw)  # the whole config validates before any fetch
    document = load(raw)
    refs = _references(document, config.version)
    if not _needs_rendering(config, refs):
        return config  # the usual case: nothing to fetch, no network touched
    session = _Session(time.monotonic() + deadline)
    session.setup(document, config.version)
    rendered = _render(session, document, 0)
    if rendered is not document:
        # Rendered: the references are used up; what is left must validate as a whole.
        rendered["ignition"] = {k: v for k, v in rendered["ignition"].items() if k != "config"}
        config = parse_config(json.dumps(rendered).encode())
        session.setup(rendered, config.version)
    return _filled(config, session)
