"""Butane configs shaped like the upstream docs' examples (written for Keel, one per
documented feature), each translated to exactly the JSON butane writes for it.

Expected outputs follow butane's documented/source behaviour: Go struct field order,
empty objects and lists omitted, `compression: ""` beside every inline/local data
URL (none for fcos 1.0.0), percent-encoding unless base64 is shorter, gzip only when
smaller, a trailing newline."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from composer.provisioning.butane import ButaneError, butane

HEAD = "variant: fcos\nversion: 1.5.0\n"

# name -> (Butane after HEAD, exact compact output butane prints)
CORPUS: dict[str, tuple[str, str]] = {
    "getting started: a user and a key": (
        "passwd:\n  users:\n    - name: core\n      ssh_authorized_keys:\n"
        "        - ssh-ed25519 AAAAC3Nza core@example\n",
        '{"ignition":{"version":"3.4.0"},"passwd":{"users":[{"name":"core",'
        '"sshAuthorizedKeys":["ssh-ed25519 AAAAC3Nza core@example"]}]}}',
    ),
    "hostname file, octal mode": (
        "storage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n"
        "      contents:\n        inline: myhost\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hostname",'
        '"contents":{"compression":"","source":"data:,myhost"},"mode":420}]}}',
    ),
    "file escaping and overwrite, owner by name and id": (
        "storage:\n  files:\n    - path: /etc/motd\n      overwrite: true\n"
        "      user:\n        name: core\n      group:\n        id: 1000\n"
        "      contents:\n        inline: <a&b>\n"
        "systemd:\n  units:\n    - name: x.service\n      contents: x<y & z>\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"group":{"id":1000},'
        '"overwrite":true,"path":"/etc/motd","user":{"name":"core"},"contents":'
        '{"compression":"","source":"data:,%3Ca%26b%3E"}}]},"systemd":{"units":[{"contents":'
        '"x\\u003cy \\u0026 z\\u003e","name":"x.service"}]}}',
    ),
    "base64 when shorter than percent-encoding": (
        'storage:\n  files:\n    - path: /etc/s\n      contents:\n        inline: "x          x"\n',
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/s","contents":'
        '{"compression":"","source":"data:;base64,eCAgICAgICAgICB4"}}]}}',
    ),
    "non-ASCII contents: base64 is shorter": (
        "storage:\n  files:\n    - path: /etc/e\n      contents:\n        inline: ééééé\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/e","contents":'
        '{"compression":"","source":"data:;base64,w6nDqcOpw6nDqQ=="}}]}}',
    ),
    "remote source with verification and headers": (
        "storage:\n  files:\n    - path: /etc/r\n      contents:\n"
        "        source: https://example.com/r\n        compression: gzip\n"
        "        http_headers:\n          - name: Authorization\n            value: Basic x\n"
        "        verification:\n          hash: sha512-00ff\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/r","contents":'
        '{"compression":"gzip","httpHeaders":[{"name":"Authorization","value":"Basic x"}],'
        '"source":"https://example.com/r","verification":{"hash":"sha512-00ff"}}}]}}',
    ),
    "append to a file": (
        "storage:\n  files:\n    - path: /etc/hosts\n      append:\n"
        "        - inline: 10.0.0.1 db\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hosts","append":'
        '[{"compression":"","source":"data:,10.0.0.1%20db"}]}]}}',
    ),
    "directories and links, hard and symbolic": (
        "storage:\n  directories:\n    - path: /var/lib/app\n      mode: 0750\n"
        "      user:\n        id: 500\n  links:\n    - path: /etc/localtime\n"
        "      target: ../usr/share/zoneinfo/UTC\n    - path: /var/lib/app/h\n"
        "      target: /etc/hosts\n      hard: true\n",
        '{"ignition":{"version":"3.4.0"},"storage":{"directories":[{"path":"/var/lib/app",'
        '"user":{"id":500},"mode":488}],"links":[{"path":"/etc/localtime",'
        '"target":"../usr/share/zoneinfo/UTC"},{"path":"/var/lib/app/h","hard":true,'
        '"target":"/etc/hosts"}]}}',
    ),
    "systemd unit with a drop-in, and a masked unit": (
        "systemd:\n  units:\n    - name: hello.service\n      enabled: true\n"
        "      contents: |\n        [Service]\n        ExecStart=/bin/echo hi\n"
        "        [Install]\n        WantedBy=multi-user.target\n"
        "    - name: docker.service\n      dropins:\n        - name: env.conf\n"
        "          contents: |\n            [Service]\n            Environment=A=1\n"
        "    - name: bad.service\n      mask: true\n",
        '{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"contents":"[Service]\\n'
        'ExecStart=/bin/echo hi\\n[Install]\\nWantedBy=multi-user.target\\n","enabled":true,'
        '"name":"hello.service"},{"dropins":[{"contents":"[Service]\\nEnvironment=A=1\\n",'
        '"name":"env.conf"}],"name":"docker.service"},{"mask":true,"name":"bad.service"}]}}',
    ),
    "every user field, and groups": (
        "passwd:\n  groups:\n    - name: app\n      gid: 900\n      system: true\n"
        "      should_exist: true\n      password_hash: '!'\n"
        "  users:\n    - name: app\n      uid: 900\n      gecos: App user\n"
        "      home_dir: /var/lib/app\n      no_create_home: true\n"
        "      primary_group: app\n      groups: [docker, wheel]\n      shell: /bin/sh\n"
        "      system: true\n      should_exist: true\n      no_log_init: false\n"
        "      no_user_group: true\n      password_hash: $y$j9T$abc\n"
        "      ssh_authorized_keys: [ssh-ed25519 AAAA app]\n",
        '{"ignition":{"version":"3.4.0"},"passwd":{"groups":[{"gid":900,"name":"app",'
        '"passwordHash":"!","shouldExist":true,"system":true}],"users":[{"gecos":"App user",'
        '"groups":["docker","wheel"],"homeDir":"/var/lib/app","name":"app",'
        '"noCreateHome":true,"noLogInit":false,"noUserGroup":true,'
        '"passwordHash":"$y$j9T$abc","primaryGroup":"app",'
        '"sshAuthorizedKeys":["ssh-ed25519 AAAA app"],"shell":"/bin/sh","shouldExist":true,'
        '"system":true,"uid":900}]}}',
    ),
    "kernel arguments": (
        "kernel_arguments:\n  should_exist: [mitigations=auto]\n  should_not_exist: [quiet]\n",
        '{"ignition":{"version":"3.4.0"},"kernelArguments":{"shouldExist":["mitigations=auto"],'
        '"shouldNotExist":["quiet"]}}',
    ),
    "ignition: merge, timeouts, certificate authorities, proxy": (
        "ignition:\n  config:\n    merge:\n      - source: https://example.com/c.ign\n"
        "        verification:\n          hash: sha512-ab\n  timeouts:\n"
        "    http_total: 30\n    http_response_headers: 5\n  security:\n    tls:\n"
        "      certificate_authorities:\n        - inline: CA\n  proxy:\n"
        "    https_proxy: http://proxy:3128\n    no_proxy: [localhost]\n",
        '{"ignition":{"config":{"merge":[{"source":"https://example.com/c.ign",'
        '"verification":{"hash":"sha512-ab"}}]},"proxy":{"httpsProxy":"http://proxy:3128",'
        '"noProxy":["localhost"]},"security":{"tls":{"certificateAuthorities":'
        '[{"compression":"","source":"data:,CA"}]}},"timeouts":{"httpResponseHeaders":5,'
        '"httpTotal":30},"version":"3.4.0"}}',
    ),
    "ignition: replace": (
        "ignition:\n  config:\n    replace:\n      source: https://example.com/r.ign\n",
        '{"ignition":{"config":{"replace":{"source":"https://example.com/r.ign"}},'
        '"version":"3.4.0"}}',
    ),
    "empty sections are omitted": (
        "passwd: {}\nstorage:\n  files: []\nsystemd:\n  units: []\nignition: {}\n",
        '{"ignition":{"version":"3.4.0"}}',
    ),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_corpus_translates_exactly_like_butane(case: str) -> None:
    body, expected = CORPUS[case]
    result = butane(HEAD + body)
    assert result.json() == (expected + "\n").encode()
    assert result.warnings == []


def test_corpus_acceptance_rate() -> None:
    accepted = sum(1 for body, _ in CORPUS.values() if butane(HEAD + body))
    assert accepted == len(CORPUS)


def test_pretty_output_is_gos_indent() -> None:
    out = butane(HEAD + "passwd:\n  users:\n    - name: core\n").json(pretty=True)
    assert out == (
        b'{\n  "ignition": {\n    "version": "3.4.0"\n  },\n  "passwd": {\n'
        b'    "users": [\n      {\n        "name": "core"\n      }\n    ]\n  }\n}\n'
    )


def test_fcos_1_0_inline_is_percent_encoded_without_compression() -> None:
    text = "variant: fcos\nversion: 1.0.0\nstorage:\n  files:\n    - path: /etc/a\n"
    text += "      contents:\n        inline: a b\n"
    assert butane(text).config["storage"]["files"][0]["contents"] == {"source": "data:,a%20b"}


def test_compressible_contents_are_gzipped_and_small_ones_not() -> None:
    big = "line of text\n" * 400
    text = HEAD + "storage:\n  files:\n    - path: /etc/big\n      contents:\n        inline: |\n"
    text += "".join(f"          {line}\n" for line in big.splitlines())
    contents = butane(text).config["storage"]["files"][0]["contents"]
    assert contents["compression"] == "gzip"
    assert contents["source"].startswith("data:;base64,")
    payload = base64.b64decode(contents["source"].removeprefix("data:;base64,"))
    assert gzip.decompress(payload).decode() == big
    # butane's own option: no automatic compression
    plain = butane(text, auto_compression=False).config["storage"]["files"][0]["contents"]
    assert plain["compression"] == ""


@pytest.mark.parametrize(
    ("variant", "version", "ignition"),
    [("fcos", "1.0.0", "3.0.0"), ("fcos", "1.1.0", "3.1.0"), ("fcos", "1.2.0", "3.2.0"),
     ("fcos", "1.3.0", "3.2.0"), ("fcos", "1.4.0", "3.3.0"), ("fcos", "1.5.0", "3.4.0"),
     ("fcos", "1.6.0", "3.5.0"), ("flatcar", "1.0.0", "3.3.0"), ("flatcar", "1.1.0", "3.4.0"),
     ("keel", "1.0.0", "3.4.0")],
)  # fmt: skip
def test_every_version(variant: str, version: str, ignition: str) -> None:
    out = butane(f"variant: {variant}\nversion: {version}\n").json()
    assert out == b'{"ignition":{"version":"' + ignition.encode() + b'"}}\n'


@pytest.mark.parametrize("newer", ["fcos 1.7.0", "flatcar 1.2.0", "keel 1.1.0", "fcos 2.0.0"])
def test_newer_versions_are_refused_by_name(newer: str) -> None:
    variant, version = newer.split()
    with pytest.raises(ButaneError) as caught:
        butane(f"variant: {variant}\nversion: {version}\n", name="n.bu")
    assert f"n.bu:1: variant '{variant}' version '{version}' is not supported" in str(caught.value)
    assert "fcos 1.0.0-1.6.0, flatcar 1.0.0-1.1.0, keel 1.0.0" in str(caught.value)


def test_fields_of_newer_versions_are_refused() -> None:
    text = "variant: fcos\nversion: 1.3.0\nkernel_arguments:\n  should_exist: [a]\n"
    with pytest.raises(ButaneError, match=r":3: field 'kernel_arguments': is not in this Butane"):
        butane(text)


def _files(tmp_path: Path) -> Path:
    files = tmp_path / "files"
    (files / "tree/etc/app").mkdir(parents=True)
    (files / "tree/etc/app/conf").write_text("x=1\n")
    (files / "tree/etc/app/run.sh").write_text("#!/bin/sh\n")
    (files / "tree/etc/app/run.sh").chmod(0o755)
    (files / "tree/etc/app/current").symlink_to("conf")
    (files / "keys").write_text("ssh-ed25519 AAAA one\r\n\nssh-ed25519 AAAA two\n")
    (files / "unit.service").write_text("[Service]\nExecStart=/bin/true\n")
    (files / "motd").write_text("hello\n")
    return files


def test_local_files_trees_and_keys(tmp_path: Path) -> None:
    text = HEAD + (
        "passwd:\n  users:\n    - name: core\n      ssh_authorized_keys: [ssh-ed25519 AAAA zero]\n"
        "      ssh_authorized_keys_local: [keys]\n"
        "storage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: motd\n"
        "    - path: /etc/app/conf\n      mode: 0600\n"
        "  trees:\n    - local: tree\n"
        "systemd:\n  units:\n    - name: app.service\n      contents_local: unit.service\n"
    )
    out = json.loads(butane(text, files_dir=_files(tmp_path)).json())
    assert out["passwd"]["users"][0]["sshAuthorizedKeys"] == [
        "ssh-ed25519 AAAA zero", "ssh-ed25519 AAAA one", "ssh-ed25519 AAAA two"
    ]  # fmt: skip
    files: list[dict[str, Any]] = out["storage"]["files"]
    assert files == [
        {"path": "/etc/motd", "contents": {"compression": "", "source": "data:,hello%0A"}},
        {"path": "/etc/app/conf", "contents": {"compression": "", "source": "data:,x%3D1%0A"},
         "mode": 0o600},
        {"path": "/etc/app/run.sh",
         "contents": {"compression": "", "source": "data:,%23!%2Fbin%2Fsh%0A"}, "mode": 0o755},
    ]  # fmt: skip
    assert out["storage"]["links"] == [{"path": "/etc/app/current", "target": "conf"}]
    assert out["systemd"]["units"][0]["contents"] == "[Service]\nExecStart=/bin/true\n"


def test_local_files_need_a_files_dir_and_stay_inside(tmp_path: Path) -> None:
    text = HEAD + "storage:\n  files:\n    - path: /etc/a\n      contents:\n        local: ../x\n"
    text += "  trees:\n    - local: /\n"
    with pytest.raises(ButaneError) as caught:
        butane(text, files_dir=tmp_path, name="l.bu")
    assert "l.bu:7: field 'storage.files.0.contents.local': local file path traverses" in str(
        caught.value
    )
    with pytest.raises(ButaneError, match="needs a files directory"):
        butane(text)


def test_decimal_mode_is_a_warning_and_strict_fails() -> None:
    text = HEAD + "storage:\n  files:\n    - path: /etc/a\n      mode: 644\n"
    assert "remember to add a leading zero" in butane(text).warnings[0]
    with pytest.raises(ButaneError, match="leading zero"):
        butane(text, strict=True)


def test_duplicates_and_relative_paths_are_refused() -> None:
    text = HEAD + "storage:\n  files:\n    - path: /etc/a\n    - path: /etc/a\n    - path: rel\n"
    with pytest.raises(ButaneError) as caught:
        butane(text)
    assert "duplicate path '/etc/a'" in str(caught.value)
    assert "'rel' is not absolute" in str(caught.value)
