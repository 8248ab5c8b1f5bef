"""Inter-DC bandwidth on demand through the lab's NSI provider (the uPA, started by `iris lab
up`): a reservation over an NSI link is held, committed, provisioned (its VLAN circuit up between
the gateways' WAN ports, policed at its capacity), released and terminated; a provider refusing
(capacity) fails the reservation cleanly and frees the compute held with it. Every message the
coordinator sends or receives is valid against the OGF schemas."""

from __future__ import annotations

import time
from contextlib import contextmanager

import httpcore
import httpx
import pytest

from iris_haas.agent.client import _NetnsBackend
from iris_haas.api.client import ApiError
from iris_haas.api.service import LocalCoordinator
from iris_haas.control.sync import AgentDataPlane
from iris_haas.lab import probe, realizer
from iris_haas.lab.register import register
from iris_haas.lab.upa import UPA_PORT, lab_nsa, lab_stp
from iris_haas.lab.wan import Wan
from iris_haas.linux.netns import socket_in_netns
from iris_haas.linux.runner import SubprocessRunner
from iris_haas.nsi.requester import Provider, Requester
from tests.lab.test_coordinator_e2e import terminate_all
from tests.nsi import validator

pytestmark = pytest.mark.lab


def _links(lab, admin) -> None:
    admin.delete("/links/inet-a")  # tenant a's bandwidth comes from the WAN provider instead
    admin.post("/links", {"name": "wan-a", "site_a": "haas", "site_b": "iaas-a", "capacity_mbps": 10_000,
                          "kind": "nsi", "nsi_provider": lab.upa_url, "nsi_provider_nsa": lab_nsa(lab.name),
                          "source_stp": lab_stp(lab.name, "hgw"), "dest_stp": lab_stp(lab.name, "agw")})


@contextmanager
def _coordinator(lab, data_dir, tap, **settings):
    """A coordinator on ``data_dir``'s database taking the uPA's callbacks on the control network,
    every NSI message it sends or receives passed to ``tap``; registers the lab on a new database."""
    ctl = lab.ns("ctl")
    sock, reply = lab.nsi_listener()
    fresh = not (data_dir / "admin-token").exists()
    with LocalCoordinator(data_dir, dataplane=AgentDataPlane(lab.coordinator_tls(), netns=ctl),
                          sockets=[sock], nsi_reply_url=reply, agent_netns=ctl, **settings) as c:
        c.engine.nsi.tap = tap
        admin = c.client(c.admin_token)
        if fresh:
            c.tokens = register(lab, admin)
            _links(lab, admin)
        yield c, admin


@pytest.fixture
def coord(lab, tmp_path, request):
    """(coordinator, admin, tenant a); ``request.param``: settings of the coordinator. The test
    fails if any NSI message it sent or received is not valid against the OGF schemas (naming
    the first)."""
    xsd, invalid, seen = validator(), [], []

    def tap(direction: str, data: bytes) -> None:
        seen.append(direction)
        invalid.extend((direction, e) for e in xsd.errors(data))

    data_dir = tmp_path / "coordinator"
    data_dir.mkdir()
    with _coordinator(lab, data_dir, tap, **getattr(request, "param", {})) as (c, admin):
        c.tap, c.data_dir = tap, data_dir
        try:
            yield c, admin, c.client(c.tokens["a"])
        finally:
            terminate_all(c, admin)
    assert seen and invalid == [], invalid[:1]


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


@contextmanager
def _iaas_gateway_on_circuit(lab, vlan: int):
    """Tenant a's IaaS gateway told to run the trunk inside the circuit on ``vlan`` (what its
    operator does with `iris gateway-config --circuit-vlan`); as the lab made it again after."""
    realizer.iaas_gateway(lab, "a", circuit_vlan=vlan)
    try:
        yield
    finally:
        realizer.iaas_gateway(lab, "a")


def _crossing(lab, vlan: int, seconds: float = 2.0) -> list[int | None]:
    """The VLANs of the frames that reach the HaaS gateway's WAN port while the IaaS management
    host pings the L1 for ``seconds``, and whether any ping was answered."""
    with probe.Sniffer(lab.ns("hgw"), "up") as sniff:
        answered = probe.ping(lab.ns("amgmt"), "10.0.101.61", count=int(seconds / 0.2), wait=0.5, interval=0.2)
    return [v for v in sniff.vlans if v == vlan] + ([-1] if answered else [])


def _active(a, rid: str, cid: str, active: bool) -> None:
    _wait(lambda: any(e["type"] == "dataPlaneStateChange" and e["detail"].get("connection_id") == cid
                      and e["detail"]["active"] is active for e in a.get(f"/reservations/{rid}/events")))


def test_the_trunk_crosses_the_wan_only_inside_the_provisioned_circuit_at_its_rate(lab, coord):
    """No frame of the tenant's crosses the WAN before provision or after release; while the
    connection is provisioned, the trunk runs in its VLAN and the WAN holds it to the capacity
    reserved (Iris adds no shaping of its own on an NSI trunk)."""
    _, _, a = coord
    mbps = 60
    r = a.post("/reservations", body(mbps))
    nsi = _nsi_of(a, r["id"])
    cid, vlan = nsi["connection_id"], nsi["vlan"]
    a.post(f"/reservations/{r['id']}/commit")
    with _iaas_gateway_on_circuit(lab, vlan):
        assert _crossing(lab, vlan) == []  # committed, not provisioned: nothing crosses
        a.post(f"/reservations/{r['id']}/provision")
        _active(a, r["id"], cid, True)
        assert probe.reachable(lab.ns("amgmt"), "10.0.101.61")
        crossed = _crossing(lab, vlan)
        assert -1 in crossed and crossed.count(vlan) >= 5, crossed  # answered, and inside the circuit
        l1 = next(x["l1"] for x in a.get(f"/reservations/{r['id']}")["resources"] if "l1" in x)
        with probe.Iperf3Server(l1):
            up = probe.iperf3(lab.ns("amgmt"), "10.0.101.61", seconds=4)
            down = probe.iperf3(lab.ns("amgmt"), "10.0.101.61", seconds=4, reverse=True)
        for goodput in (up, down):  # held by the WAN's circuit, in each direction
            assert 0.6 * mbps <= goodput <= 1.05 * mbps, (up, down)
        a.post(f"/reservations/{r['id']}/release")
        _active(a, r["id"], cid, False)
        assert _crossing(lab, vlan) == []  # released: nothing crosses, whatever the IaaS side sends
    a.post(f"/reservations/{r['id']}/terminate")


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


def _upa_hold(lab, seconds: float) -> float:
    """The lab uPA's test hook: its hold time (reserveTimeout after it); the previous one."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=_NetnsBackend(lab.ns("ctl")))
    with httpx.Client(transport=transport, trust_env=False, timeout=5) as http:
        r = http.put(lab.upa_url.replace("/nsi/provider", "/lab/hold"), json={"hold_s": seconds})
        r.raise_for_status()
        return r.json()["hold_s"]


def _state(client, rid: str) -> dict:
    return client.get(f"/reservations/{rid}")


def _nsi_of(client, rid: str) -> dict:
    return next(x for x in _state(client, rid)["resources"] if x["manager"] == "nrm")["nsi"]


def _freed(c, lab, client, rid: str, cid: str, state: str) -> None:
    """Both sides consistent after a reservation's held version ended: Iris's in ``state``
    holding nothing, the provider's connection terminated with no version held."""
    out = _state(client, rid)
    assert out["reservation_state"] == state and out["resources"] == [], out
    s = _summary(c, lab, cid)
    assert s["lifecycle_state"] == "Terminated" and s["reservation_state"] != "ReserveHeld", s


def test_abort_frees_both_sides(lab, coord):
    c, _, a = coord
    r = a.post("/reservations", body(100))
    cid = _nsi_of(a, r["id"])["connection_id"]
    a.post(f"/reservations/{r['id']}/abort")
    _freed(c, lab, a, r["id"], cid, "ReserveStart")


@pytest.mark.parametrize("coord", [{"hold_timeout_s": 1.5}], indirect=True)
def test_iris_hold_timeout_aborts_the_connection(lab, coord):
    c, _, a = coord
    r = a.post("/reservations", body(100))
    cid = _nsi_of(a, r["id"])["connection_id"]
    _wait(lambda: _state(a, r["id"])["reservation_state"] == "ReserveTimeout", 10)
    _freed(c, lab, a, r["id"], cid, "ReserveTimeout")


def test_the_providers_reserve_timeout_fails_the_child_and_frees_the_compute(lab, coord):
    c, _, a = coord
    old = _upa_hold(lab, 1.0)
    try:
        r = a.post("/reservations", body(100))
        cid = _nsi_of(a, r["id"])["connection_id"]
        _wait(lambda: _state(a, r["id"])["reservation_state"] == "ReserveTimeout", 10)
    finally:
        _upa_hold(lab, old)
    _freed(c, lab, a, r["id"], cid, "ReserveTimeout")
    err = next(e for e in a.get(f"/reservations/{r['id']}/events") if e["type"] == "errorEvent")
    assert "timed out the held connection" in err["detail"]["message"] and err["detail"]["connection_id"] == cid


def _tenant_b_link(lab, admin, url: str, vlans: tuple[int, int], instead_of: str = "inet-b") -> None:
    admin.delete(f"/links/{instead_of}")
    admin.post("/links", {"name": "wan-b", "site_a": "haas", "site_b": "iaas-b", "capacity_mbps": 10_000,
                          "kind": "nsi", "nsi_provider": url, "nsi_provider_nsa": lab_nsa(lab.name),
                          "source_stp": lab_stp(lab.name, "hgw", vlans), "dest_stp": lab_stp(lab.name, "bgw", vlans)})


def test_a_vlan_taken_fails_the_reservation_and_frees_the_compute(lab, coord):
    c, admin, a = coord
    first = a.post("/reservations", body(100))
    vlan = _nsi_of(a, first["id"])["vlan"]
    _tenant_b_link(lab, admin, lab.upa_url, (vlan, vlan))  # tenant b may use only the VLAN a holds on hgw
    b = c.client(c.tokens["b"])
    with pytest.raises(ApiError) as e:
        b.post("/reservations", body(100))
    assert e.value.status == 409 and e.value.body["nsi_error_id"] == "00701", e.value.body
    failed = _state(b, e.value.body["reservation_id"])
    assert failed["reservation_state"] == "ReserveFailed" and failed["resources"] == []
    refused = [s for s in c.engine.nsi.query(Provider(lab.upa_url, lab_nsa(lab.name)), []).summaries
               if s["reservation_state"] == "ReserveFailed"]
    assert refused and all(s["lifecycle_state"] == "Terminated" for s in refused), refused
    # tenant b's compute was freed with it: the same request without the network item fits
    ok = b.post("/reservations", {**body(1), "items": body(1)["items"][:1]})
    assert ok["reservation_state"] == "ReserveHeld"
    a.post(f"/reservations/{first['id']}/abort")


@pytest.mark.parametrize("coord", [{"nsi_timeout_s": 1.5}], indirect=True)
def test_a_provider_that_never_answers_fails_the_child_after_the_bound(lab, coord):
    c, admin, _ = coord
    silent = socket_in_netns(lab.ns("ctl"))  # accepts connections (the kernel's backlog), never answers
    try:
        silent.bind((lab.topo.ctl_ip("ctl"), 0))
        silent.listen(8)
        _tenant_b_link(lab, admin, f"http://{lab.topo.ctl_ip('ctl')}:{silent.getsockname()[1]}/nsi/provider",
                       (1780, 1799))
        b = c.client(c.tokens["b"])
        t0 = time.monotonic()
        with pytest.raises(ApiError) as e:
            b.post("/reservations", body(100))
        took = time.monotonic() - t0
    finally:
        silent.close()
    assert e.value.status == 409 and "did not acknowledge reserve within 1.5 s" in e.value.body["message"], e.value.body
    assert took < 5
    failed = _state(b, e.value.body["reservation_id"])
    assert failed["reservation_state"] == "ReserveFailed" and failed["resources"] == []
    # and one whose port is closed fails at once, saying so
    _tenant_b_link(lab, admin, lab.upa_url.replace(f":{UPA_PORT}/", ":9/"), (1780, 1799), instead_of="wan-b")
    with pytest.raises(ApiError) as e:
        b.post("/reservations", body(100))
    assert e.value.status == 409 and "unreachable for reserve" in e.value.body["message"], e.value.body
    assert _state(b, e.value.body["reservation_id"])["resources"] == []


def test_a_coordinator_restart_mid_life_reconciles_with_the_provider(lab, tmp_path):
    """One reservation provisioned (its circuit up), one held; the coordinator stops; meanwhile the
    provider times the held one out (its reserveTimeout reaches nobody). A coordinator started on
    the same database asks the provider (querySummarySync) and follows it: the held one times out
    at Iris too and is freed on both sides; the provisioned one stays Provisioned and active, and
    is released and terminated through the new coordinator."""
    xsd, invalid = validator(), []

    def tap(direction: str, data: bytes) -> None:
        invalid.extend((direction, e) for e in xsd.errors(data))

    wan = Wan(lab.ns("inet"), SubprocessRunner())
    upa = Provider(lab.upa_url, lab_nsa(lab.name))
    data_dir = tmp_path / "coordinator"
    data_dir.mkdir()
    with _coordinator(lab, data_dir, tap) as (c, admin):
        tokens, nsa = c.tokens, c.settings.nsi_requester_nsa
        try:
            a = c.client(tokens["a"])
            live = a.post("/reservations", body(100))
            a.post(f"/reservations/{live['id']}/commit")
            a.post(f"/reservations/{live['id']}/provision")
            cid_live, vlan = (_nsi_of(a, live["id"])[k] for k in ("connection_id", "vlan"))
            _wait(lambda: _nsi_of(a, live["id"])["active"])
            held = a.post("/reservations", body(100, "10.0.101.62/24"))
            cid_held = _nsi_of(a, held["id"])["connection_id"]
            old = _upa_hold(lab, 1.0)
        except BaseException:
            terminate_all(c, admin)
            raise
    # the coordinator is down: the provider's hold timer runs out meanwhile
    probe = Requester(nsa, "http://127.0.0.1:9/unused", netns=lab.ns("ctl"), tap=tap)
    try:
        _wait(lambda: probe.query(upa, [cid_held]).summaries[0]["reservation_state"] == "ReserveTimeout", 10)
    finally:
        probe.close()
        _upa_hold(lab, old)
    with _coordinator(lab, data_dir, tap) as (c, admin):
        try:
            a = c.client(tokens["a"])
            _wait(lambda: _state(a, held["id"])["reservation_state"] == "ReserveTimeout", 10)
            _freed(c, lab, a, held["id"], cid_held, "ReserveTimeout")
            err = next(e for e in a.get(f"/reservations/{held['id']}/events") if e["type"] == "errorEvent")
            assert err["detail"]["reconciled"] and "no longer holds" in err["detail"]["message"], err
            out = _state(a, live["id"])
            assert (out["reservation_state"], out["provision_state"]) == ("ReserveStart", "Provisioned")
            assert _nsi_of(a, live["id"])["active"] is True
            s = _summary(c, lab, cid_live)
            assert (s["reservation_state"], s["provision_state"], s["active"]) == ("ReserveStart", "Provisioned", True)
            assert wan.circuits(["hgw"])["hgw"][vlan] == 100.0
            a.post(f"/reservations/{live['id']}/release")  # the new coordinator drives it on
            _wait(lambda: not _nsi_of(a, live["id"])["active"])
            assert vlan not in wan.circuits(["hgw"])["hgw"]
            a.post(f"/reservations/{live['id']}/terminate")
            assert _summary(c, lab, cid_live)["lifecycle_state"] == "Terminated"
        finally:
            terminate_all(c, admin)
    assert invalid == [], invalid[:1]
