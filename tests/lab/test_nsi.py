"""Inter-DC bandwidth on demand through the lab's NSI provider (the uPA, started by `iris lab
up`): a reservation over an NSI link is held, committed, provisioned (its VLAN circuit up between
the gateways' WAN ports, policed at its capacity), released and terminated; a provider refusing
(capacity) fails the reservation cleanly and frees the compute held with it. Every message the
coordinator sends or receives is valid against the OGF schemas."""

from __future__ import annotations

import time

import pytest

from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab.register import register
from iris_haas.lab.upa import lab_nsa, lab_stp
from iris_haas.lab.wan import Wan
from iris_haas.linux.runner import SubprocessRunner
from iris_haas.nsi.requester import Provider
from tests.lab.test_coordinator_e2e import terminate_all
from tests.nsi import validator

pytestmark = pytest.mark.lab


@pytest.fixture
def coord(lab, tmp_path):
    xsd, invalid, seen = validator(), [], []

    def tap(direction: str, data: bytes) -> None:
        seen.append(direction)
        invalid.extend(xsd.errors(data))

    ctl = lab.ns("ctl")
    sock, reply = lab.nsi_listener()
    with LocalCoordinator(tmp_path, dataplane=AgentDataPlane(lab.coordinator_tls(), netns=ctl),
                          sockets=[sock], nsi_reply_url=reply, agent_netns=ctl) as c:
        c.engine.nsi.tap = tap
        admin = c.client(c.admin_token)
        tokens = register(lab, admin)
        admin.delete("/links/inet-a")  # tenant a's bandwidth comes from the WAN provider instead
        admin.post("/links", {"name": "wan-a", "site_a": "haas", "site_b": "iaas-a", "capacity_mbps": 10_000,
                              "kind": "nsi", "nsi_provider": lab.upa_url, "nsi_provider_nsa": lab_nsa(lab.name),
                              "source_stp": lab_stp(lab.name, "hgw"), "dest_stp": lab_stp(lab.name, "agw")})
        tenant = c.client(tokens["a"])
        try:
            yield c, admin, tenant
        finally:
            terminate_all(c, admin)
    assert seen and invalid == [], invalid


def body(mbps: int, address: str = "10.0.101.61/24") -> dict:
    return {"duration_s": 600, "items": [
        {"kind": "compute", "count": 1, "l1_kind": "netns", "cpus": 1, "memory_mb": 256, "disk_gb": 1,
         "addresses": [address]},
        {"kind": "network", "bandwidth_mbps": mbps}]}


def _summary(c, lab, cid: str) -> dict:
    out = c.engine.nsi.query(Provider(lab.upa_url, lab_nsa(lab.name)), [cid])
    return out.summaries[0]


def _wait(pred, timeout: float = 15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_nsi_reservation_through_the_lab_provider(lab, coord):
    c, _, a = coord
    wan = Wan(lab.ns("inet"), SubprocessRunner())
    r = a.post("/reservations", body(200))
    assert r["reservation_state"] == "ReserveHeld"
    nsi = next(x for x in a.get(f"/reservations/{r['id']}")["resources"] if x["manager"] == "nrm")["nsi"]
    cid, vlan = nsi["connection_id"], nsi["vlan"]
    assert 1780 <= vlan <= 1799 and nsi["source_stp"] == f"{lab_stp(lab.name, 'hgw', None)}?vlan={vlan}"
    assert _summary(c, lab, cid)["reservation_state"] == "ReserveHeld"
    a.post(f"/reservations/{r['id']}/commit")
    assert _summary(c, lab, cid)["reservation_state"] == "ReserveStart"
    p = a.post(f"/reservations/{r['id']}/provision")
    assert p["provision_state"] == "Provisioned"
    _wait(lambda: any(e["type"] == "dataPlaneStateChange" and e["detail"].get("connection_id") == cid
                      and e["detail"]["active"] for e in a.get(f"/reservations/{r['id']}/events")))
    circuits = wan.circuits(["hgw", "agw", "bgw"])
    assert circuits["hgw"][vlan] == circuits["agw"][vlan] == 200.0 and vlan not in circuits["bgw"], circuits
    a.post(f"/reservations/{r['id']}/release")
    _wait(lambda: vlan not in wan.circuits(["hgw"])["hgw"])
    assert vlan not in wan.circuits(["agw"])["agw"]
    a.post(f"/reservations/{r['id']}/terminate")
    assert _summary(c, lab, cid)["lifecycle_state"] == "Terminated"


def test_the_provider_refusing_fails_the_reservation_and_frees_the_compute(lab, coord):
    _, _, a = coord
    first = a.post("/reservations", body(800))
    with pytest.raises(ApiError) as e:
        a.post("/reservations", body(300, "10.0.101.62/24"))  # 800 + 300 > the WAN port's 1000 Mb/s
    assert e.value.status == 409 and e.value.body["nsi_error_id"] == "00705", e.value.body
    failed = a.get(f"/reservations/{e.value.body['reservation_id']}")
    assert failed["reservation_state"] == "ReserveFailed" and failed["resources"] == []
    err = next(x for x in a.get(f"/reservations/{failed['id']}/events") if x["type"] == "errorEvent")
    assert "CAPACITY_UNAVAILABLE" in err["detail"]["nsi_error_text"]
    # nothing of the failed one is held: aborting the first leaves the calendar empty
    a.post(f"/reservations/{first['id']}/abort")
    assert [x for r in a.get("/reservations") for x in a.get(f"/reservations/{r['id']}")["resources"]] == []
