"""The lab's WAN provider: a minimal NSI CS 2.0 uPA (ultimate Provider Agent) of Iris's own.

It owns the lab's "internet" switch between the gateways: each of its STPs is a gateway's WAN
port on that switch, with the VLANs it may carry. A connection is reserved (a VLAN free on both
ports, and capacity free on both over the schedule), held until committed, aborted or timed out,
and realized by the fabric while it is provisioned and inside its schedule: a VLAN circuit
between the two ports with its capacity enforced. What does not fit is refused with NSI's error
ids (00705 CAPACITY_UNAVAILABLE, 00701 STP_UNAVAILABLE for a VLAN in use, 00700 for an unknown
STP), in a reserveFailed. Requests are acknowledged at once; every outcome goes to the
requester's replyTo as a callback, after the acknowledgment.

It is an ASGI app (``Provider.app``) that ``iris lab up`` runs with uvicorn in the lab's control
network (``python -m iris_haas.lab.wan``), with :class:`iris_haas.lab.wan.Wan` as its fabric.
Beside the NSI endpoint it has one test hook, ``PUT /lab/hold`` (``{"hold_s": 2}``): how long a
held connection waits for its commit before the provider sends reserveTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from iris_haas.contract.types import stp_vlans
from iris_haas.nsi import messages as m

log = logging.getLogger("iris.upa")

UPA_PORT = 9080  # on the lab's control network (its switch's address)
WAN_VLANS = (1780, 1799)  # the VLANs the lab's WAN carries between gateways
WAN_MBPS = 1000  # each gateway's WAN port


@dataclass(frozen=True)
class Port:
    """An STP of the uPA's network: a port on its switch, the VLANs it carries, its capacity."""

    stp: str  # the STP's id without its label
    ifname: str
    vlans: tuple[int, int]
    capacity_mbps: int


@dataclass(frozen=True)
class Circuit:
    connection_id: str
    vlan: int
    mbps: int
    a: Port
    b: Port


class Fabric(Protocol):
    def up(self, circuit: Circuit) -> None: ...

    def down(self, circuit: Circuit) -> None: ...


@dataclass
class Connection:
    id: str
    requester_nsa: str
    reply_to: str | None
    a: Port
    b: Port
    vlan: int
    held: m.Criteria | None = None
    committed: m.Criteria | None = None
    held_at: float = 0.0
    reservation: str = "ReserveChecking"
    provision: str = "Released"
    lifecycle: str = "Created"
    active: bool = False
    global_reservation_id: str | None = None
    description: str | None = None

    def live(self) -> list[m.Criteria]:
        """What it takes of the network: its committed and its held version."""
        return [c for c in (self.committed, self.held) if c is not None] if self.lifecycle == "Created" else []

    def states(self) -> m.States:
        return m.States(self.reservation, self.provision, self.lifecycle, self.active,
                        self.committed.version if self.committed else 0, True)

    def confirmed(self, c: m.Criteria) -> m.Criteria:
        """The criteria as confirmed: the STPs with the one VLAN chosen."""
        return replace(c, source_stp=f"{self.a.stp}?vlan={self.vlan}", dest_stp=f"{self.b.stp}?vlan={self.vlan}")


class Refused(Exception):
    def __init__(self, error_id: str, text: str):
        super().__init__(text)
        self.error_id, self.text = error_id, f"{m.ERRORS.get(error_id, 'ERROR')}: {text}"


@dataclass
class Provider:
    nsa: str
    ports: list[Port]
    fabric: Fabric
    hold_s: float = 60.0
    clock: Callable[[], float] = time.time
    tap: Callable[[str, bytes], None] | None = None  # every message, sent or received
    connections: dict[str, Connection] = field(default_factory=dict)
    _notification: int = 0

    # ------------------------------------------------------------------ admission
    def _port(self, stp: str) -> tuple[Port, tuple[int, int]]:
        base = stp.partition("?")[0]
        port = next((p for p in self.ports if p.stp == base), None)
        if port is None:
            raise Refused("00700", f"no STP {base} in {self.nsa}'s network")
        asked = stp_vlans(stp) or port.vlans
        lo, hi = max(asked[0], port.vlans[0]), min(asked[1], port.vlans[1])
        if lo > hi:
            raise Refused("00701", f"{stp}: {base} carries VLANs {port.vlans[0]}-{port.vlans[1]} only")
        return port, (lo, hi)

    def _others(self, me: str | None, port: Port) -> list[tuple[Connection, m.Criteria]]:
        return [(c, x) for c in self.connections.values() if c.id != me and port in (c.a, c.b) for x in c.live()]

    def _admit(self, me: str | None, c: m.Criteria, vlan: int | None = None) -> tuple[Port, Port, int]:
        """The two ports and the VLAN of a connection for ``c``, or Refused: capacity is summed over
        the connections overlapping its schedule on each port; a VLAN is taken while any live
        connection on either port has it."""
        a, va = self._port(c.source_stp)
        b, vb = self._port(c.dest_stp)
        if a == b:
            raise Refused("00700", "the source and destination STPs are the same port")
        lo, hi = max(va[0], vb[0]), min(va[1], vb[1])
        for port in (a, b):
            used = sum(x.capacity_mbps for _, x in self._others(me, port) if x.start < c.end and c.start < x.end)
            if used + c.capacity_mbps > port.capacity_mbps:
                raise Refused("00705", f"{c.capacity_mbps} Mb/s asked on {port.stp}, "
                                       f"{max(port.capacity_mbps - used, 0)} Mb/s free over the schedule")
        taken = {o.vlan for p in (a, b) for o, _ in self._others(me, p)}
        choice = [vlan] if vlan is not None else range(lo, hi + 1)
        free = next((v for v in choice if lo <= v <= hi and v not in taken), None)
        if free is None:
            raise Refused("00701", f"no VLAN of {lo}-{hi} free on both {a.stp} and {b.stp}")
        return a, b, free

    # ------------------------------------------------------------------ the protocol
    def handle(self, data: bytes) -> tuple[bytes, int, list[bytes], str | None]:
        """One request: (the synchronous answer, its HTTP status, the callbacks to send after it,
        where to). A fault is an HTTP 500, as SOAP 1.1's HTTP binding has it."""
        try:
            req = m.parse(data)
        except m.MessageError as e:
            return m.fault(None, m.ServiceException(self.nsa, "00101", f"PAYLOAD_ERROR: {e}")), 500, [], None
        h = req.header
        answer = h.answer()
        try:
            if h.provider_nsa != self.nsa:
                raise Refused("00101", f"providerNSA {h.provider_nsa} is not {self.nsa}")
            if req.operation == "reserve":
                return self._reserve(req, answer)
            if req.operation == "querySummarySync":
                return self._query(req, answer), 200, [], None
            op = getattr(self, f"_{req.operation}", None)
            if op is None or req.operation not in m.REQUESTS:
                raise Refused("00101", f"{req.operation} is not an operation of this provider")
            conn = self._connection(req, h)
            callbacks = op(conn, answer)
            return m.acknowledgment(answer), 200, callbacks, conn.reply_to
        except Refused as e:
            return m.fault(answer, m.ServiceException(self.nsa, e.error_id, e.text, req.connection_id)), 500, [], None

    def _connection(self, req: m.Message, h: m.Header) -> Connection:
        conn = self.connections.get(req.connection_id or "")
        if conn is None or conn.requester_nsa != h.requester_nsa:
            raise Refused("00201", f"no connection {req.connection_id}")
        if h.reply_to:
            conn.reply_to = h.reply_to
        return conn

    def _reserve(self, req: m.Message, answer: m.Header) -> tuple[bytes, int, list[bytes], str | None]:
        h, c = req.header, req.criteria
        if c is None:
            raise Refused("00101", "a reserve has criteria")
        if req.connection_id:  # a modify: the same connection at a higher version, its VLAN kept
            conn = self._connection(req, h)
            if conn.reservation != "ReserveStart" or conn.lifecycle != "Created" or conn.committed is None:
                raise Refused("00203", f"connection {conn.id} is {conn.reservation}: it cannot be modified")
            if c.version <= conn.committed.version:
                raise Refused("00101", f"version {c.version} is not above {conn.committed.version}")
        else:
            conn = None
        cid = conn.id if conn else f"urn:uuid:{uuid.uuid4()}"
        try:
            a, b, vlan = self._admit(cid, c, conn.vlan if conn else None)
        except Refused as e:
            if conn is None:  # the refused connection exists, ReserveFailed, until terminated
                port = self.ports[0]
                conn = Connection(cid, h.requester_nsa, h.reply_to, port, port, 0, reservation="ReserveFailed",
                                  global_reservation_id=req.global_reservation_id)
                self.connections[cid] = conn
            else:
                conn.reservation = "ReserveFailed"
            exc = m.ServiceException(self.nsa, e.error_id, e.text, cid, c.service_type or None)
            failed = m.failed(answer, "reserveFailed", cid, conn.states(), exc)
            conn.reservation = "ReserveStart" if conn.committed else "ReserveFailed"
            return m.reserve_response(answer, cid), 200, [failed], h.reply_to
        if conn is None:
            conn = Connection(cid, h.requester_nsa, h.reply_to, a, b, vlan,
                              global_reservation_id=req.global_reservation_id, description=req.description)
            self.connections[cid] = conn
        conn.held, conn.held_at, conn.reservation = c, self.clock(), "ReserveHeld"
        confirmed = m.reserve_confirmed(answer, cid, conn.confirmed(c), global_reservation_id=conn.global_reservation_id,
                                        description=conn.description)
        return m.reserve_response(answer, cid), 200, [confirmed], conn.reply_to

    def _need(self, conn: Connection, state: str, operation: str, attr: str = "reservation") -> None:
        if getattr(conn, attr) != state or conn.lifecycle not in ("Created", "Failed", "PassedEndTime"):
            raise Refused("00203", f"connection {conn.id} is {getattr(conn, attr)}: {operation} needs {state}")

    def _reserveCommit(self, conn: Connection, answer: m.Header) -> list[bytes]:  # noqa: N802 - NSI's name
        self._need(conn, "ReserveHeld", "reserveCommit")
        conn.committed, conn.held, conn.reservation = conn.held, None, "ReserveStart"
        return [m.generic(answer, "reserveCommitConfirmed", conn.id)]

    def _reserveAbort(self, conn: Connection, answer: m.Header) -> list[bytes]:  # noqa: N802
        if conn.reservation not in ("ReserveHeld", "ReserveFailed", "ReserveTimeout"):
            raise Refused("00203", f"connection {conn.id} is {conn.reservation}: nothing to abort")
        conn.held, conn.reservation = None, "ReserveStart"
        return [m.generic(answer, "reserveAbortConfirmed", conn.id)]

    def _provision(self, conn: Connection, answer: m.Header) -> list[bytes]:
        self._need(conn, "Released", "provision", "provision")
        if conn.committed is None:
            raise Refused("00203", f"connection {conn.id} has no committed version to provision")
        conn.provision = "Provisioned"
        return [m.generic(answer, "provisionConfirmed", conn.id)]

    def _release(self, conn: Connection, answer: m.Header) -> list[bytes]:
        self._need(conn, "Provisioned", "release", "provision")
        conn.provision = "Released"
        return [m.generic(answer, "releaseConfirmed", conn.id)]

    def _terminate(self, conn: Connection, answer: m.Header) -> list[bytes]:
        if conn.lifecycle == "Terminated":
            raise Refused("00203", f"connection {conn.id} is terminated already")
        conn.lifecycle, conn.held = "Terminated", None
        return [m.generic(answer, "terminateConfirmed", conn.id)]

    def _query(self, req: m.Message, answer: m.Header) -> bytes:
        mine = [c for c in self.connections.values() if c.requester_nsa == req.header.requester_nsa
                and (not req.connection_ids or c.id in req.connection_ids)]
        return m.query_summary_sync_confirmed(answer, [
            (c.id, c.requester_nsa, c.confirmed(x) if (x := c.committed or c.held) else None, c.states())
            for c in mine])

    # ------------------------------------------------------------------ timers and the data plane
    def _next_notification(self) -> int:
        self._notification += 1
        return self._notification

    def settle(self) -> list[tuple[str | None, bytes]]:
        """Hold timeouts, and every connection's data plane made what its states and schedule say
        (the fabric's circuit up or down): the notifications to send, each with where to."""
        now, out = self.clock(), []
        for conn in list(self.connections.values()):
            header = m.Header(conn.requester_nsa, self.nsa, protocol_version=m.REQUESTER_PROTOCOL)
            if conn.reservation == "ReserveHeld" and now - conn.held_at > self.hold_s:
                conn.reservation, conn.held = "ReserveTimeout", None
                out.append((conn.reply_to, m.reserve_timeout(header, conn.id, self._next_notification(), now,
                                                             timeout_s=int(self.hold_s), provider_nsa=self.nsa)))
            c = conn.committed
            want = (conn.provision == "Provisioned" and conn.lifecycle == "Created" and c is not None
                    and c.start <= now < c.end)
            if want == conn.active:
                continue
            assert c is not None
            circuit = Circuit(conn.id, conn.vlan, c.capacity_mbps, conn.a, conn.b)
            try:
                (self.fabric.up if want else self.fabric.down)(circuit)
            except Exception as e:  # the circuit did not come up (or go): the requester is told
                log.exception("circuit %s", conn.id)
                exc = m.ServiceException(self.nsa, "00500", f"INTERNAL_ERROR: {e}", conn.id)
                out.append((conn.reply_to, m.error_event(header, conn.id, self._next_notification(), now,
                                                         event="activateFailed" if want else "deactivateFailed",
                                                         provider_nsa=self.nsa, exception=exc)))
                continue
            conn.active = want
            out.append((conn.reply_to, m.data_plane_state_change(header, conn.id, self._next_notification(), now,
                                                                 active=want, version=c.version)))
        return out

    # ------------------------------------------------------------------ ASGI
    def app(self, settle_every_s: float = 0.5) -> Starlette:
        lock = asyncio.Lock()
        client = httpx.AsyncClient(timeout=10.0, trust_env=False)

        async def send(to: str | None, body: bytes) -> None:
            if not to:
                return
            self._seen("sent", body)
            op = m.parse(body).operation
            try:
                r = await client.post(to, content=body, headers={"Content-Type": m.CONTENT_TYPE,
                                                                 "SOAPAction": m.soap_action(op)})
                self._seen("received", r.content)
            except httpx.HTTPError as e:
                log.warning("callback %s to %s: %s", op, to, e)

        async def settle() -> None:
            async with lock:
                notes = await asyncio.to_thread(self.settle)
            for to, body in notes:
                await send(to, body)

        async def after(to: str | None, callbacks: list[bytes]) -> None:
            for body in callbacks:
                await send(to, body)
            await settle()

        async def provider(request: Request) -> Response:
            data = await request.body()
            self._seen("received", data)
            async with lock:
                answer, status, callbacks, to = self.handle(data)
            self._seen("sent", answer)
            return Response(answer, status_code=status, media_type=m.CONTENT_TYPE,
                            background=BackgroundTask(after, to, callbacks) if callbacks else None)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(settle_every_s)
                try:
                    await settle()
                except Exception:
                    log.exception("settle failed")

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette):
            task = asyncio.create_task(ticker())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()

        async def hold(request: Request) -> Response:
            """The lab's test hook (not NSI): set how long a held connection waits for its commit
            before the provider times it out; answers the previous value."""
            try:
                value = float((await request.json())["hold_s"])
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"detail": "give hold_s, a number of seconds > 0", "field": "hold_s"}, 422)
            if not 0 < value <= 86400:
                return JSONResponse({"detail": "hold_s must be > 0 and <= 86400", "field": "hold_s"}, 422)
            async with lock:
                old, self.hold_s = self.hold_s, value
            return JSONResponse({"hold_s": old})

        return Starlette(routes=[Route("/nsi/provider", provider, methods=["POST"]),
                                 Route("/lab/hold", hold, methods=["PUT"])], lifespan=lifespan)

    def _seen(self, direction: str, data: bytes) -> None:
        if self.tap is not None:
            self.tap(direction, data)


# ---------------------------------------------------------------------- in the lab
def lab_domain(lab_name: str) -> str:
    return f"urn:ogf:network:{lab_name}.lab.iris:2026"


def lab_nsa(lab_name: str) -> str:
    return f"{lab_domain(lab_name)}:nsa:upa"


def lab_stp(lab_name: str, gateway: str, vlans: tuple[int, int] | None = WAN_VLANS) -> str:
    """The STP of a gateway's WAN port (``hgw``, ``<tenant>gw``), with a VLAN label."""
    label = f"?vlan={vlans[0]}-{vlans[1]}" if vlans else ""
    return f"{lab_domain(lab_name)}:{gateway}{label}"


def lab_ports(lab_name: str, gateways: list[str], capacity_mbps: int = WAN_MBPS) -> list[Port]:
    # the internet switch's port towards each gateway has the gateway's name (topology.expand)
    return [Port(lab_stp(lab_name, g, None), g, WAN_VLANS, capacity_mbps) for g in gateways]
