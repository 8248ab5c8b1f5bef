"""Storage admission through the API: a volume is admitted only where the pool has its size free
over the whole interval, and giving a reservation up gives its capacity back.

The standard inventory has one pool, ``pool0``, of 1000 GB."""

from __future__ import annotations

from iris_haas.contract import names
from iris_haas.control.schemas import from_epoch
from tests.conftest import T0


def storage(size_gb: int, keep: bool = False) -> dict:
    return {"kind": "storage", "size_gb": size_gb, "keep": keep}


def reserve(api, who: str, size_gb: int, start: float = T0, end: float = T0 + 3600):
    return api.call("POST", "/reservations", who, json={
        "items": [storage(size_gb)], "start": from_epoch(start).isoformat(), "end": from_epoch(end).isoformat()})


def msg(api, rid: str, name: str, who: str = "alice"):
    return api.ok("POST", f"/reservations/{rid}/{name}", who)


def test_storage_admission_refuses_a_volume_larger_than_the_pools_free_capacity_over_the_interval(api):
    a = reserve(api, "alice", 800)
    assert a.status_code == 201, a.text
    msg(api, a.json()["id"], "commit")
    [res] = a.json()["resources"]
    assert (res["manager"], res["pool"]) == ("srm", "pool0")
    assert res["volume"] == names.volume(res["no"])  # named by a number the database gives once
    b = reserve(api, "bob", 100).json()
    assert b["resources"][0]["volume"] != res["volume"]
    msg(api, b["id"], "abort", "bob")

    # overlapping alice's interval, even by one second at either end: only 200 GB are free
    for start, end in ((T0, T0 + 3600), (T0 + 3599, T0 + 7200), (T0 - 3600, T0 + 1)):
        r = reserve(api, "bob", 300, start, end)
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "ReserveFailed"
        assert "200 GB" in r.json()["message"]
    # what is free fits, and so does anything after alice's end
    assert reserve(api, "bob", 200).status_code == 201
    assert reserve(api, "bob", 1000, T0 + 3600, T0 + 7200).status_code == 201
    # never more than the pool
    assert reserve(api, "bob", 1001, T0 + 7200, T0 + 9000).status_code == 409


def test_storage_release_and_terminate_free_the_capacity(api):
    a = reserve(api, "alice", 800).json()
    msg(api, a["id"], "commit")
    assert msg(api, a["id"], "provision")["data_plane_active"]
    assert reserve(api, "bob", 300).status_code == 409
    # release stops the data plane (the volume is wiped unless kept) but the reservation still holds
    # its interval: a provision may follow
    assert not msg(api, a["id"], "release")["data_plane_active"]
    assert reserve(api, "bob", 300).status_code == 409
    # terminate gives the capacity back
    assert msg(api, a["id"], "terminate")["lifecycle_state"] == "Terminated"
    b = reserve(api, "bob", 1000)
    assert b.status_code == 201, b.text


def test_storage_aborted_hold_frees_the_capacity(api):
    a = reserve(api, "alice", 900).json()
    assert reserve(api, "bob", 200).status_code == 409  # a hold counts as much as a commit
    msg(api, a["id"], "abort")
    assert reserve(api, "bob", 1000).status_code == 201
