"""The NRM as an NSI requester inside the two-phase commit, against the lab's uPA over real HTTP
(both on uvicorn, on 127.0.0.1): held on reserveConfirmed, failed on reserveFailed with the
provider's error, the network committed first, provision and the provider's data plane, release,
terminate, abort and the hold timeout as reserveAbort, the provider's reserveTimeout, a provider
that never answers. Every message either side sends or receives is valid against the OGF schemas."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from iris_haas.api.app import create_app
from iris_haas.control.engine import Coordinator
from iris_haas.control.sync import InMemoryDataPlane
from iris_haas.lab.upa import Circuit, Port, Provider
from iris_haas.nsi import messages as m
from iris_haas.nsi.requester import Provider as NsiProvider
from iris_haas.nsi.requester import Requester
from tests.conftest import ADMIN
from tests.nsi import validator

pytestmark = pytest.mark.unit

REQ, PROV = "urn:ogf:network:iris.test:2026:nsa:iris", "urn:ogf:network:lab.iris:2026:nsa:upa"
DC1, DC2 = "urn:ogf:network:lab.iris:2026:haas-gw", "urn:ogf:network:lab.iris:2026:a-gw"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Circuits:
    """The uPA's data plane as a record of the circuits it holds up (the lab's is tc and VLANs)."""

    up_now: dict[str, Circuit] = field(default_factory=dict)

    def up(self, c: Circuit) -> None:
        self.up_now[c.connection_id] = c

    def down(self, c: Circuit) -> None:
        self.up_now.pop(c.connection_id)


class Tap:
    """Every message on the wire, both ways, validated against the XSDs as it passes."""

    def __init__(self):
        self.xsd, self.count, self.invalid = validator(), 0, []
        self.lock = threading.Lock()

    def __call__(self, direction: str, data: bytes) -> None:
        errors = self.xsd.errors(data)
        with self.lock:
            self.count += 1
            if errors:
                self.invalid.append((direction, errors))


class World:
    def __init__(self, coord: Coordinator, provider: Provider, circuits: Circuits, url: str, tap: Tap):
        self.coord, self.provider, self.circuits, self.tap = coord, provider, circuits, tap
        self.http = httpx.Client(base_url=f"{url}/v1", timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})
        self.tenant: dict = {}
        self.tokens: dict[str, str] = {}

    def call(self, method: str, path: str, who: str = "alice", **kw) -> httpx.Response:
        return self.http.request(method, path, headers=self.tenant if who == "alice" else None, **kw)

    def ok(self, method: str, path: str, who: str = "alice", **kw):
        r = self.call(method, path, who, **kw)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.status_code != 204 else None

    def reserve(self, mbps: int, count: int = 1, **kw) -> httpx.Response:
        return self.call("POST", "/reservations", json={"duration_s": 3600, **kw, "items": [
            {"kind": "compute", "count": count}, {"kind": "network", "bandwidth_mbps": mbps}]})

    def events(self, rid: str) -> list[dict]:
        return self.ok("GET", f"/reservations/{rid}/events")

    def wait_event(self, rid: str, pred, timeout: float = 10.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [e for e in self.events(rid) if pred(e)]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no such event: {self.events(rid)}")


@pytest.fixture
def world(sqlite_db):
    tap = Tap()
    circuits = Circuits()
    ports = [Port(DC1, "hgw", (1780, 1799), 1000), Port(DC2, "agw", (1780, 1799), 1000)]
    provider = Provider(PROV, ports, circuits, hold_s=60, tap=tap)
    coord_port = _port()
    requester = Requester(REQ, f"http://127.0.0.1:{coord_port}/v1/nsi/requester", timeout_s=5, tap=tap)
    coord = Coordinator(sqlite_db, dataplane=InMemoryDataPlane(), nsi=requester)
    with serve(provider.app(settle_every_s=0.05), _port()) as purl, serve(create_app(coord, ADMIN), coord_port) as url:
        w = World(coord, provider, circuits, url, tap)
        w.ok("POST", "/sites", "admin", json={"name": "haas"})
        w.ok("POST", "/nodes", "admin", json={"name": "l0-0", "site": "haas", "cpus": 8, "memory_mb": 16384,
                                               "disk_gb": 500, "underlay_address": "198.18.10.10"})
        w.ok("POST", "/gateways", "admin", json={"name": "haas-gw", "site": "haas", "underlay_address": "198.18.0.1"})
        token = w.ok("POST", "/tenants", "admin", json={"name": "alice"})["token"]
        w.tenant = {"Authorization": f"Bearer {token}"}
        w.ok("POST", "/sites", json={"name": "iaas-alice", "gateway_underlay": "198.18.0.11"})
        w.ok("POST", "/links", "admin", json={
            "name": "wan", "site_a": "haas", "site_b": "iaas-alice", "capacity_mbps": 10_000, "kind": "nsi",
            "nsi_provider": f"{purl}/nsi/provider", "nsi_provider_nsa": PROV,
            "source_stp": f"{DC1}?vlan=1780-1799", "dest_stp": f"{DC2}?vlan=1780-1799"})
        yield w
        coord.close()
    assert tap.invalid == [], tap.invalid


def _network(res: dict) -> dict:
    return next(r for r in res["resources"] if r["manager"] == "nrm")


def test_held_committed_provisioned_released_terminated(world):
    r = world.reserve(300)
    assert r.status_code == 201, r.text
    res = r.json()
    assert res["reservation_state"] == "ReserveHeld"
    nsi = _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]
    conn = world.provider.connections[nsi["connection_id"]]
    assert conn.reservation == "ReserveHeld"
    assert (nsi["provider_nsa"], nsi["vlan"]) == (PROV, 1780)
    assert nsi["source_stp"] == f"{DC1}?vlan=1780" and nsi["dest_stp"] == f"{DC2}?vlan=1780"
    assert world.ok("POST", f"/reservations/{res['id']}/commit")["reservation_state"] == "ReserveStart"
    assert conn.reservation == "ReserveStart" and conn.committed is not None
    assert world.ok("POST", f"/reservations/{res['id']}/provision")["provision_state"] == "Provisioned"
    assert conn.provision == "Provisioned"
    world.wait_event(res["id"], lambda e: e["type"] == "dataPlaneStateChange"
                     and e["detail"].get("connection_id") == nsi["connection_id"] and e["detail"]["active"])
    assert world.circuits.up_now[nsi["connection_id"]].mbps == 300
    assert _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]["active"] is True
    world.ok("POST", f"/reservations/{res['id']}/release")
    assert conn.provision == "Released"
    world.wait_event(res["id"], lambda e: e["type"] == "dataPlaneStateChange"
                     and e["detail"].get("connection_id") and not e["detail"]["active"])
    assert world.circuits.up_now == {}
    world.ok("POST", f"/reservations/{res['id']}/terminate")
    assert conn.lifecycle == "Terminated"
    assert world.tap.count > 20


def test_provider_refusing_fails_the_reservation_and_frees_the_compute(world):
    assert world.reserve(800).status_code == 201
    r = world.reserve(300, count=1)  # 800 + 300 > the port's 1000 Mb/s
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["type"] == "ReserveFailed" and body["nsi_error_id"] == "00705"
    assert "CAPACITY_UNAVAILABLE" in body["message"]
    events = world.events(body["reservation_id"])
    err = next(e for e in events if e["type"] == "errorEvent")
    assert err["detail"]["nsi_error_id"] == "00705" and "CAPACITY_UNAVAILABLE" in err["detail"]["nsi_error_text"]
    failed = world.ok("GET", f"/reservations/{body['reservation_id']}")
    assert failed["reservation_state"] == "ReserveFailed" and failed["resources"] == []
    # the provider's failed connection is terminated, not left behind
    refused = [c for c in world.provider.connections.values() if c.reservation == "ReserveFailed"]
    assert len(refused) == 1 and refused[0].lifecycle == "Terminated"
    # the compute it would have held is free: 7 more CPUs fit next to the first reservation's one
    assert world.call("POST", "/reservations", json={"duration_s": 60, "items": [
        {"kind": "compute", "count": 1, "cpus": 7}]}).status_code == 201


def test_abort_and_the_hold_timeout_send_reserve_abort(world):
    first = world.reserve(500).json()
    cid = _network(world.ok("GET", f"/reservations/{first['id']}"))["nsi"]["connection_id"]
    world.ok("POST", f"/reservations/{first['id']}/abort")
    assert world.provider.connections[cid].reservation == "ReserveStart"
    assert world.provider.connections[cid].held is None
    assert world.provider.connections[cid].lifecycle == "Terminated"  # never committed: nothing will use it
    second = world.reserve(500).json()
    cid2 = _network(world.ok("GET", f"/reservations/{second['id']}"))["nsi"]["connection_id"]
    world.coord.tick(time.time() + 3600)  # past Iris's hold timer
    assert world.ok("GET", f"/reservations/{second['id']}")["reservation_state"] == "ReserveTimeout"
    assert world.provider.connections[cid2].held is None
    assert world.provider.connections[cid2].lifecycle == "Terminated"


def test_the_providers_reserve_timeout_fails_the_child(world):
    res = world.reserve(100).json()
    cid = _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]["connection_id"]
    world.provider.hold_s = 0  # its next settle times the held connection out
    world.wait_event(res["id"], lambda e: e["type"] == "reserveTimeout", timeout=10)
    out = world.ok("GET", f"/reservations/{res['id']}")
    assert out["reservation_state"] == "ReserveTimeout" and out["resources"] == []
    err = next(e for e in world.events(res["id"]) if e["type"] == "errorEvent")
    assert err["detail"]["connection_id"] == cid and "timed out" in err["detail"]["message"]


def test_a_forged_notification_is_ignored(world):
    res = world.reserve(100).json()
    cid = _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]["connection_id"]
    h = m.Header(REQ, "urn:ogf:network:evil.example:2026:nsa:x", protocol_version=m.REQUESTER_PROTOCOL)
    forged = m.reserve_timeout(h, cid, 9, time.time(), timeout_s=1, provider_nsa=h.provider_nsa)
    r = world.http.post("/nsi/requester", content=forged, headers={"Content-Type": m.CONTENT_TYPE})
    assert r.status_code == 200 and m.parse(r.content).operation == "acknowledgment"
    assert world.http.post("/nsi/requester", content=b"<junk/>").status_code == 422
    world.tap.invalid.remove(("received", ["junk: Element 'junk': No matching global declaration available for "
                                           "the validation root."]))
    time.sleep(0.3)
    assert world.ok("GET", f"/reservations/{res['id']}")["reservation_state"] == "ReserveHeld"


@contextmanager
def silent_provider(sqlite_db, timeout_s: float, tenants: tuple[str, ...] = ("alice",)) -> Iterator[World]:
    """A coordinator (its requester bound ``timeout_s``) on real HTTP with one L0, tenant alice's
    IaaS site over an NSI link to a provider that acknowledges every request and confirms none;
    the world's tenant is alice, ``world.tokens`` every tenant's token."""
    async def silent(request: Request) -> Response:
        req = m.parse(await request.body())
        return Response(m.reserve_response(req.header.answer(), m.new_correlation_id()), media_type=m.CONTENT_TYPE)

    coord_port = _port()
    requester = Requester(REQ, f"http://127.0.0.1:{coord_port}/v1/nsi/requester", timeout_s=timeout_s)
    coord = Coordinator(sqlite_db, dataplane=InMemoryDataPlane(), nsi=requester)
    with serve(Starlette(routes=[Route("/nsi", silent, methods=["POST"])]), _port()) as purl, \
            serve(create_app(coord, ADMIN), coord_port) as url:
        w = World(coord, None, Circuits(), url, Tap())  # type: ignore[arg-type]
        w.ok("POST", "/sites", "admin", json={"name": "haas"})
        w.ok("POST", "/nodes", "admin", json={"name": "l0-0", "site": "haas", "cpus": 8, "memory_mb": 16384,
                                               "disk_gb": 500, "underlay_address": "198.18.10.10"})
        w.tokens = {n: w.ok("POST", "/tenants", "admin", json={"name": n})["token"] for n in tenants}
        w.tenant = {"Authorization": f"Bearer {w.tokens['alice']}"}
        w.ok("POST", "/sites", json={"name": "iaas-alice", "gateway_underlay": "198.18.0.11"})
        w.ok("POST", "/links", "admin", json={
            "name": "wan", "site_a": "haas", "site_b": "iaas-alice", "capacity_mbps": 1000, "kind": "nsi",
            "nsi_provider": f"{purl}/nsi", "nsi_provider_nsa": PROV, "source_stp": DC1, "dest_stp": DC2})
        try:
            yield w
        finally:
            coord.close()


def reserve_in_background(w: World, answer: list[httpx.Response]) -> tuple[threading.Thread, dict]:
    """Alice's reservation of an L1 and 5 Mb/s over the NSI link, sent from a thread (its answer
    appended to ``answer``); the reservation as soon as it is listed."""
    t = threading.Thread(target=lambda: answer.append(w.call("POST", "/reservations", json={
        "duration_s": 60, "items": [{"kind": "compute", "count": 1}, {"kind": "network", "bandwidth_mbps": 5}]})))
    t.start()
    deadline = time.monotonic() + 2
    while not (mine := w.ok("GET", "/reservations")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(mine) == 1, mine
    return t, mine[0]


def test_a_provider_that_never_answers_fails_the_child_in_bounded_time(sqlite_db):
    """It acknowledges, then never confirms: the reserve fails after the requester's bound."""
    with silent_provider(sqlite_db, timeout_s=0.5) as w:
        t0 = time.monotonic()
        r = w.call("POST", "/reservations", json={"duration_s": 60, "items": [{"kind": "network", "bandwidth_mbps": 5}]})
        took = time.monotonic() - t0
    assert r.status_code == 409 and "did not confirm reserve within 0.5 s" in r.json()["message"], r.text
    assert took < 5


def test_reserve_checking_is_visible_while_the_provider_is_asked_and_blocks_no_one(sqlite_db):
    """A provider slow to confirm: the reservation is ReserveChecking meanwhile, and another
    tenant's reservation is admitted and held without waiting for that provider."""
    answer: list[httpx.Response] = []
    with silent_provider(sqlite_db, timeout_s=3, tenants=("alice", "bob")) as w:
        t, mine = reserve_in_background(w, answer)
        assert mine["reservation_state"] == "ReserveChecking", mine
        nsi = _network(w.ok("GET", f"/reservations/{mine['id']}"))["nsi"]
        assert nsi["checking"] is True and "connection_id" not in nsi
        bob = {"Authorization": f"Bearer {w.tokens['bob']}"}
        t0 = time.monotonic()
        other = w.http.post("/reservations", headers=bob, json={"duration_s": 60, "items": [
            {"kind": "compute", "count": 1}]})
        assert other.status_code == 201 and other.json()["reservation_state"] == "ReserveHeld", other.text
        assert time.monotonic() - t0 < 1.5  # not behind the provider's answer
        assert w.ok("GET", f"/reservations/{mine['id']}")["reservation_state"] == "ReserveChecking"
        t.join(timeout=10)
        failed = w.ok("GET", f"/reservations/{mine['id']}")
    r = answer[0]
    assert r.status_code == 409 and "did not confirm reserve within 3 s" in r.json()["message"], r.text
    assert failed["reservation_state"] == "ReserveFailed" and failed["resources"] == [], failed


def test_a_reservation_left_checking_by_a_stopped_coordinator_fails_at_the_next_lead(sqlite_db):
    """Coordinator A stops while it asks a provider that never confirms; B, coming to lead on the
    same database, fails what A left in ReserveChecking and frees what it held."""
    with silent_provider(sqlite_db, timeout_s=3) as w:
        t, mine = reserve_in_background(w, [])
        rid = mine["id"]
        assert mine["reservation_state"] == "ReserveChecking"
        w.coord.lease.release()  # A stops leading while it still waits
        b = Coordinator(sqlite_db, dataplane=InMemoryDataPlane(), nsi=Requester(REQ, "http://127.0.0.1:9/", timeout_s=1))
        b.tick()
        res, _, resources = b.get(None, rid)
        assert res.reservation_state == "ReserveFailed" and resources == []
        errors = [e.detail for e in b.events(None, rid) if e.type == "errorEvent"]
        assert errors and errors[-1]["reconciled"] is True and "stopped" in errors[-1]["message"]
        t.join(timeout=10)
        res, _, _ = b.get(None, rid)
        assert res.reservation_state == "ReserveFailed"  # A's late answer changed nothing
        b.close()


def test_modify_is_a_reserve_of_the_same_connection(world):
    res = world.reserve(100).json()
    world.ok("POST", f"/reservations/{res['id']}/commit")
    cid = _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]["connection_id"]
    out = world.ok("POST", f"/reservations/{res['id']}/modify", json={"version": 2, "bandwidth_mbps": 400})
    assert out["reservation_state"] == "ReserveHeld"
    conn = world.provider.connections[cid]
    assert conn.held is not None and conn.held.capacity_mbps == 400 and conn.held.version == 2
    world.ok("POST", f"/reservations/{res['id']}/commit")
    assert conn.committed is not None and conn.committed.capacity_mbps == 400 and conn.held is None
    assert _network(world.ok("GET", f"/reservations/{res['id']}"))["nsi"]["connection_id"] == cid
    # a modify the provider refuses leaves the committed version in force, at Iris and there
    r = world.call("POST", f"/reservations/{res['id']}/modify", json={"version": 3, "bandwidth_mbps": 2000})
    assert r.status_code == 409 and r.json()["nsi_error_id"] == "00705", r.text
    assert conn.committed.capacity_mbps == 400 and conn.lifecycle == "Created"
    assert world.ok("GET", f"/reservations/{res['id']}")["committed_version"] == 2


def test_callbacks_are_matched_by_correlation_and_connection_not_order(sqlite_db):
    """This provider confirms before it acknowledges, first for a connection that is not the one it
    then acknowledges: the requester takes the confirmation of its own connection only."""
    tap = Tap()
    mine, other = m.new_correlation_id(), m.new_correlation_id()  # connection ids (urn:uuid too)

    async def eager(request: Request) -> Response:
        req = m.parse(await request.body())
        a = req.header.answer()
        assert req.criteria is not None and req.header.reply_to
        async with httpx.AsyncClient() as client:
            for cid in (other, mine):
                body = m.reserve_confirmed(a, cid, req.criteria)
                tap("sent", body)
                await client.post(req.header.reply_to, content=body, headers={"Content-Type": m.CONTENT_TYPE})
        return Response(m.reserve_response(a, mine), media_type=m.CONTENT_TYPE)

    coord_port = _port()
    requester = Requester(REQ, f"http://127.0.0.1:{coord_port}/v1/nsi/requester", timeout_s=5, tap=tap)
    coord = Coordinator(sqlite_db, dataplane=InMemoryDataPlane(), nsi=requester)
    with serve(Starlette(routes=[Route("/nsi", eager, methods=["POST"])]), _port()) as purl, \
            serve(create_app(coord, ADMIN), coord_port):
        ok = requester.reserve(NsiProvider(f"{purl}/nsi", PROV), m.Criteria(1, 2e9, 2e9 + 60, 10, DC1, DC2, "EVTS"),
                               global_reservation_id=m.new_correlation_id())
        coord.close()
    assert ok.operation == "reserveConfirmed" and ok.connection_id == mine
    assert tap.invalid == [] and tap.count >= 6


def test_a_coordinator_that_comes_to_lead_reconciles_with_query_summary_sync(world):
    """Callbacks missed (the provider's reply URL unreachable, as while the coordinator is down):
    a held connection timed out and a provisioned one's data plane taken down at the provider.
    The next leader's first tick asks the provider (querySummarySync) and follows it: the held
    version times out, the data plane is the provider's, the provision state Iris's again."""
    held = world.reserve(100).json()
    live = world.reserve(200).json()
    world.ok("POST", f"/reservations/{live['id']}/commit")
    world.ok("POST", f"/reservations/{live['id']}/provision")
    cid_held, cid_live = (_network(world.ok("GET", f"/reservations/{r['id']}"))["nsi"]["connection_id"]
                          for r in (held, live))
    world.wait_event(live["id"], lambda e: e["detail"].get("connection_id") == cid_live and e["detail"].get("active"))
    for cid in (cid_held, cid_live):
        world.provider.connections[cid].reply_to = f"http://127.0.0.1:{_port()}/gone"
    world.provider.connections[cid_live].provision = "Released"  # as if released behind Iris's back
    world.provider.hold_s = 0
    deadline = time.time() + 10
    while world.provider.connections[cid_held].reservation != "ReserveTimeout" or cid_live in world.circuits.up_now:
        assert time.time() < deadline, "the provider did not change"
        time.sleep(0.02)
    assert world.ok("GET", f"/reservations/{held['id']}")["reservation_state"] == "ReserveHeld"  # missed
    world.coord._leading = False  # as after a restart or a take-over
    world.coord.tick()
    out = world.ok("GET", f"/reservations/{held['id']}")
    assert out["reservation_state"] == "ReserveTimeout" and out["resources"] == []
    assert world.provider.connections[cid_held].lifecycle == "Terminated"
    err = next(e for e in world.events(held["id"]) if e["type"] == "errorEvent")
    assert err["detail"]["reconciled"] and "no longer holds" in err["detail"]["message"]
    # the provider was Released, Iris Provisioned: provision again; its data plane comes back up
    assert world.provider.connections[cid_live].provision == "Provisioned"
    change = next(e for e in world.events(live["id"]) if e["detail"].get("reconciled"))
    assert change["type"] == "dataPlaneStateChange" and change["detail"]["active"] is False
    world.provider.connections[cid_live].reply_to = world.coord.nsi.reply_url  # type: ignore[union-attr]
    deadline = time.time() + 10
    while cid_live not in world.circuits.up_now:
        assert time.time() < deadline
        time.sleep(0.02)
    world.coord._leading = False
    world.coord.tick()
    assert _network(world.ok("GET", f"/reservations/{live['id']}"))["nsi"]["active"] is True
