"""The FleetLock semaphore against a fake etcd that keeps key versions as etcd does, and
the server's request checks (the real etcd is in tests/integration/test_fleetlock.py)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable

import pytest

from composer.fleet import semaphore, server
from composer.fleet.etcd import Etcd, EtcdError, KeyValue
from composer.fleet.semaphore import Semaphore, SemaphoreFull, Semaphores


class FakeEtcd:
    """Keys with etcd's version rule: 0 for a missing key, +1 on every put."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int]] = {}
        self.txns = 0
        self.before_txn: Callable[[], None] = lambda: None

    def get(self, key: bytes) -> KeyValue | None:
        if key not in self.data:
            return None
        value, version = self.data[key]
        return KeyValue(key, value, version, 0)

    def get_prefix(self, prefix: bytes) -> list[KeyValue]:
        return [
            KeyValue(k, v, n, 0) for k, (v, n) in sorted(self.data.items()) if k.startswith(prefix)
        ]

    def put_if_version(self, key: bytes, version: int, value: bytes) -> bool:
        self.before_txn()
        self.txns += 1
        current = self.data.get(key, (b"", 0))[1]
        if current != version:
            return False
        self.data[key] = (value, current + 1)
        return True


def test_the_key_and_json_are_airlocks() -> None:
    assert semaphore.key("workers") == b"com.coreos.airlock/groups/workers/v1/semaphore"
    assert semaphore.key("a b/c") == b"com.coreos.airlock/groups/a+b%2Fc/v1/semaphore"
    assert semaphore.group_of(semaphore.key("a b/c")) == "a b/c"
    etcd = FakeEtcd()
    Semaphores(etcd, 2).lock("workers", "zz")
    value, version = etcd.data[b"com.coreos.airlock/groups/workers/v1/semaphore"]
    assert json.loads(value) == {"total_slots": 2, "holders": ["zz"]}
    assert version == 1


def test_a_semaphore_airlock_wrote_is_read_and_kept_sorted() -> None:
    etcd = FakeEtcd()
    etcd.data[semaphore.key("default")] = (b'{"total_slots":3,"holders":["m","c"]}', 4)
    semaphores = Semaphores(etcd, default_slots=1)
    held, new = semaphores.lock("default", "f")
    assert new and held.holders == ["c", "f", "m"] and held.total_slots == 3  # etcd's, not 1


def test_locks_are_recursive_and_slots_are_bounded() -> None:
    etcd = FakeEtcd()
    semaphores = Semaphores(etcd, default_slots=1, groups={"pairs": 2})
    assert semaphores.lock("default", "a")[1]
    assert not semaphores.lock("default", "a")[1]  # again: still held, nothing written
    assert etcd.txns == 1
    with pytest.raises(SemaphoreFull, match="all 1 semaphore slots currently locked"):
        semaphores.lock("default", "b")
    semaphores.lock("pairs", "a")
    semaphores.lock("pairs", "b")
    with pytest.raises(SemaphoreFull):
        semaphores.lock("pairs", "c")
    assert semaphores.unlock("default", "a")[1]
    assert not semaphores.unlock("default", "a")[1]
    assert semaphores.lock("default", "b")[1]
    assert {g: s.holders for g, s in semaphores.all().items()} == {
        "default": ["b"],
        "pairs": ["a", "b"],
    }


def test_a_change_between_read_and_write_is_retried_on_the_new_value() -> None:
    etcd = FakeEtcd()
    semaphores = Semaphores(etcd, default_slots=2)
    semaphores.lock("default", "a")
    raced = {"done": False}

    def other_server_locks_first() -> None:
        if not raced["done"]:
            raced["done"] = True
            _, version = etcd.data[semaphore.key("default")]
            etcd.data[semaphore.key("default")] = (
                Semaphore(2, ["a", "other"]).to_json(),
                version + 1,
            )

    etcd.before_txn = other_server_locks_first
    with pytest.raises(SemaphoreFull):  # the retry sees the slot the other server took
        semaphores.lock("default", "b")
    assert etcd.txns == 2


def test_two_first_locks_race_to_create_the_key() -> None:
    etcd = FakeEtcd()
    semaphores = Semaphores(etcd, default_slots=1)

    def someone_creates_it() -> None:
        if semaphore.key("default") not in etcd.data:
            etcd.data[semaphore.key("default")] = (Semaphore(1, ["x"]).to_json(), 1)

    etcd.before_txn = someone_creates_it
    with pytest.raises(SemaphoreFull):
        semaphores.lock("default", "a")


def test_garbage_in_etcd_is_an_error_not_a_free_slot() -> None:
    etcd = FakeEtcd()
    etcd.data[semaphore.key("default")] = (b"not json", 1)
    with pytest.raises(semaphore.SemaphoreError):
        Semaphores(etcd).lock("default", "a")


def test_etcd_urls_must_be_http() -> None:
    with pytest.raises(EtcdError):
        Etcd("unix:///run/etcd.sock")
    assert Etcd("http://a:2379/, http://b:2379").endpoints == ["http://a:2379", "http://b:2379"]


# --- the server ---------------------------------------------------------------------------


def post(url: str, path: str, body: bytes, header: str | None = "true") -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"fleet-lock-protocol": header} if header else {}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def body(node: str, group: str = "default") -> bytes:
    return json.dumps({"client_params": {"id": node, "group": group}}).encode()


@pytest.mark.parametrize(
    ("raw", "header", "value"),
    [
        (body("a"), None, "wrong 'fleet-lock-protocol' header"),
        (b"{}", "true", "the body is not FleetLock JSON"),
        (body(""), "true", "empty client ID"),
        (body("a", ""), "true", "empty client group"),
        (body("a", "no/slash"), "true", "group must match"),
        (body("a" * 300), "true", "client ID longer than"),
    ],
)
def test_bad_requests_are_refused_as_airlock_refuses_them(
    raw: bytes, header: str | None, value: str
) -> None:
    with server.serving(Semaphores(FakeEtcd())) as url:
        status, answer = post(url, "/v1/pre-reboot", raw, header)
    assert status == 400
    error = json.loads(answer)
    assert error["kind"] == "invalid_client_identity" and value in error["value"]


def test_the_server_locks_and_unlocks() -> None:
    etcd = FakeEtcd()
    with server.serving(Semaphores(etcd, default_slots=1)) as url:
        assert post(url, "/v1/pre-reboot", body("a")) == (200, b"")
        status, answer = post(url, "/v1/pre-reboot", body("b"))
        assert status == 500 and json.loads(answer)["kind"] == "failed_lock"
        assert post(url, "/v1/steady-state", body("a")) == (200, b"")
        assert post(url, "/v1/pre-reboot", body("b")) == (200, b"")
        status, _ = post(url, "/v1/other", body("b"))
        assert status == 404
        status, _ = post(url, "/v1/pre-reboot", b"x" * (server.MAX_BODY + 1))
        assert status == 413
