"""What a build signs with: boot.secure_boot against the keys `keel build --keys`
names, and the trust root --keys gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.build.cli import use_key_folder
from composer.build.pipeline import signing_keys
from composer.core.errors import KeelError
from composer.publish import keys, secureboot
from tests.unit.composer.definition.conftest import MINIMAL, Workspace


@pytest.fixture(scope="module")
def key_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    keys.generate_keys(folder)
    secureboot.generate(folder, "Test owner")
    return folder


def definition(ws: Workspace, boot: str = "") -> object:
    ws.image("x.yaml", MINIMAL + boot)
    return ws.load("x.yaml")


def test_keys_with_a_secure_boot_folder_sign_by_default(ws: Workspace, key_folder: Path) -> None:
    found = signing_keys(definition(ws), key_folder)  # type: ignore[arg-type]
    assert found is not None and found.db_key == key_folder / "secure-boot/db.key"


def test_no_keys_or_no_secure_boot_folder_signs_nothing(ws: Workspace, tmp_path: Path) -> None:
    defn = definition(ws)
    assert signing_keys(defn, None) is None  # type: ignore[arg-type]
    tuf_only = tmp_path / "tuf-only"
    keys.generate_keys(tuf_only)
    assert signing_keys(defn, tuf_only) is None  # type: ignore[arg-type]


def test_secure_boot_false_signs_nothing_even_with_keys(ws: Workspace, key_folder: Path) -> None:
    defn = definition(ws, "boot:\n  secure_boot: false\n")
    assert signing_keys(defn, key_folder) is None  # type: ignore[arg-type]


def test_secure_boot_true_without_keys_says_how_to_make_them(ws: Workspace) -> None:
    defn = definition(ws, "boot:\n  secure_boot: true\n")
    with pytest.raises(KeelError, match="no --keys folder given") as error:
        signing_keys(defn, None)  # type: ignore[arg-type]
    assert "keel keygen" in str(error.value.hint)


def test_secure_boot_needs_verity(ws: Workspace, key_folder: Path) -> None:
    ws.image("x.yaml", MINIMAL + "boot:\n  verity: false\n  secure_boot: true\n")
    message = ws.error("x.yaml")
    assert "images/x.yaml:9: field 'boot.secure_boot' is true but 'boot.verity' is false" in message
    # Unset, with keys given: refused too, rather than a signed chain to an unverified root.
    defn = definition(ws, "boot:\n  verity: false\n")
    with pytest.raises(KeelError, match=r"boot\.verity is false"):
        signing_keys(defn, key_folder)  # type: ignore[arg-type]


def test_an_incomplete_secure_boot_folder_is_named(tmp_path: Path, key_folder: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "secure-boot").mkdir(parents=True)
    for name in ("owner.guid", "PK.key", "PK.crt", "KEK.key", "KEK.crt", "db.crt"):
        (broken / "secure-boot" / name).write_bytes(
            (key_folder / "secure-boot" / name).read_bytes()
        )
    with pytest.raises(KeelError, match=r"incomplete: .*db\.key missing"):
        secureboot.load(broken)


def test_keys_folder_gives_the_trust_root(
    key_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_UPDATE_ROOT", "/elsewhere/root.json")
    use_key_folder(key_folder)
    assert os.environ["KEEL_UPDATE_ROOT"] == str(key_folder / "root.json")
    with pytest.raises(KeelError, match="no such folder"):
        use_key_folder(tmp_path / "missing")


def test_certificates_not_keys_go_beside_the_disk(key_folder: Path, tmp_path: Path) -> None:
    loaded = secureboot.load(key_folder)
    assert loaded is not None
    folder = secureboot.copy_certificates(loaded, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["KEK.crt", "PK.crt", "db.crt", "owner.guid"]
    assert (folder / "owner.guid").read_text().strip() == loaded.owner_guid
