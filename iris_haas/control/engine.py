"""The resource coordinator: NSI state machines over the managers, with two-phase commit.

Every public method is one database transaction: it either applies completely or not at all.
Desired data-plane state is derived from the active reservations (``desired_states``) and pushed
to the hosts whose state changed, after the transaction commits.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from iris_haas.contract.errors import (
    DataPlaneError,
    IllegalTransition,
    InvalidInput,
    IrisError,
    NotFound,
    ReserveFailed,
    VersionConflict,
)
from iris_haas.contract.ops import DesiredState
from iris_haas.contract.types import L1Kind, LifecycleState, NodeState, ProvisionState, ReservationState, ServiceModel
from iris_haas.control.schemas import ModifyRequest, ReserveRequest, to_epoch
from iris_haas.control.states import LIFECYCLE, MACHINES, PROVISION, RESERVATION
from iris_haas.control.sync import DataPlane, InMemoryDataPlane
from iris_haas.managers.base import ActiveView, Context, Query, ResourceManager
from iris_haas.managers.crm import ComputeManager
from iris_haas.managers.nrm import NetworkManager
from iris_haas.managers.srm import StorageManager
from iris_haas.store.db import Database
from iris_haas.store.models import Allocation, Criteria, Event, Node, Reservation, Site, Tenant, bump_inventory

log = logging.getLogger("iris.coordinator")

STATE_ATTR = {"reservation": "reservation_state", "provision": "provision_state", "lifecycle": "lifecycle_state"}


@dataclass
class Outcome:
    """What a transaction decided; an error here is raised only after the transaction commits,
    because the state change it records (ReserveFailed, a timeout) must persist."""

    reservation: Reservation
    error: IrisError | None = None


class Coordinator:
    def __init__(
        self,
        db: Database,
        *,
        hold_timeout_s: float = 60.0,
        dataplane: DataPlane | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.hold_timeout_s = hold_timeout_s
        self.dataplane = dataplane if dataplane is not None else InMemoryDataPlane()
        self.clock = clock
        self._pushed: dict[str, str] = {}  # host -> the desired state last pushed to it
        self._push_lock = threading.Lock()
        network, compute, storage = NetworkManager(), ComputeManager(), StorageManager()
        self.managers: dict[str, ResourceManager] = {"network": network, "compute": compute, "storage": storage}
        # NSI: commit the externally controlled part (the network path) first, then what Iris controls.
        self.commit_order: list[ResourceManager] = [network, compute, storage]

    # ---------------------------------------------------------------- helpers
    def _event(self, s: Session, res: Reservation, type_: str, **detail) -> None:
        s.add(Event(reservation_id=res.id, at=self.clock(), type=type_, detail=detail))

    def _transition(self, s: Session, res: Reservation, machine: str, event: str) -> None:
        attr = STATE_ATTR[machine]
        old = getattr(res, attr)
        new = MACHINES[machine].next(old, event)
        setattr(res, attr, new)
        self._event(s, res, "transition", machine=machine, event=event, **{"from": old, "to": new},
                    version=res.version)

    def _load(self, s: Session, rid: str, tenant_id: int | None) -> Reservation:
        res = s.scalar(select(Reservation).where(Reservation.id == rid).with_for_update())
        if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
            raise NotFound(f"no reservation {rid}")
        return res

    def _context(self, s: Session, res: Reservation, version: int) -> Context:
        crit = res.criteria_for(version)
        return Context(session=s, reservation=res, start=crit.start if crit else 0.0, end=crit.end if crit else 0.0)

    def _haas_site(self, s: Session, name: str | None) -> Site:
        q = select(Site).where(Site.kind == "haas")
        if name is not None:
            site = s.scalar(q.where(Site.name == name))
            if site is None:
                raise InvalidInput(f"no HaaS site named {name}", field="site")
            return site
        sites = list(s.scalars(q))
        if len(sites) != 1:
            raise InvalidInput(f"there are {len(sites)} HaaS sites; name one in site", field="site")
        return sites[0]

    def _involved(self, res: Reservation) -> list[ResourceManager]:
        """The managers, in commit order, that any version of this reservation has items for."""
        kinds = {item["kind"] for c in res.criteria for item in c.items}
        return [m for m in self.commit_order if m.item_kind in kinds]

    def _site_model(self, s: Session, tenant_id: int) -> str:
        models = set(s.scalars(select(Site.service_model).where(Site.tenant_id == tenant_id))) - {None}
        model = ServiceModel(models.pop()) if len(models) == 1 else ServiceModel.NODE
        if model == ServiceModel.ROUTED:
            raise InvalidInput("a routed (model c) reservation names its subnet: give service_model c and routing",
                               field="routing")
        return model

    def _check(self, s: Session, res: Reservation, now: float) -> IrisError | None:
        """ReserveStart -> ReserveChecking -> ReserveHeld | ReserveFailed, over every item."""
        self._transition(s, res, "reservation", "reserve")
        ctx = self._context(s, res, res.version)
        try:
            for index, item in enumerate(res.criteria_for(res.version).items):
                self.managers[item["kind"]].reserve(ctx, index, item)
        except ReserveFailed as e:
            for m in self._involved(res):  # a child failed: abort the held siblings
                m.abort(ctx)
            self._transition(s, res, "reservation", "reserve_fail")
            self._event(s, res, "errorEvent", message=e.message, version=res.version)
            e.extra["reservation_id"] = res.id
            return e
        self._transition(s, res, "reservation", "reserve_ok")
        res.hold_expires_at = now + self.hold_timeout_s
        return None

    def _sync(self, s: Session, res: Reservation, now: float) -> bool:
        """Set whether the data plane is active: only while Provisioned and start <= now < end.
        Returns whether the hosts' desired state may have changed."""
        ctx = self._context(s, res, res.committed_version)
        active = (
            res.provision_state in (ProvisionState.PROVISIONING, ProvisionState.PROVISIONED)
            and res.lifecycle_state == LifecycleState.CREATED
            and res.committed_version > 0
            and ctx.start <= now < ctx.end
        )
        if not active and not res.data_plane_active:
            return False
        res.data_plane_active = active
        self._event(s, res, "dataPlaneStateChange", active=active, version=res.committed_version,
                    versionConsistent=True)
        return True

    def desired_states(self) -> dict[str, tuple[str | None, DesiredState]]:
        """Every host's desired state (agent URL, ops), derived from the active reservations."""
        with self.db.transaction() as s:
            view = ActiveView(s)
            per_host: dict[str, dict[tuple, object]] = {n.name: {} for n in view.nodes.values()}
            per_host |= {g.name: {} for g in view.gateways}
            for m in self.commit_order:
                for host, op in m.desired(view):
                    ops = per_host.setdefault(host, {})
                    have = ops.get(op.ident())
                    if have is not None and have != op:
                        raise DataPlaneError(f"two different ops for {op.ident()} on {host}: {have} and {op}")
                    ops[op.ident()] = op
            urls = {n.name: n.agent_url for n in view.nodes.values()} | {g.name: g.agent_url for g in view.gateways}
        return {h: (urls.get(h), DesiredState(ops=list(ops.values()))) for h, ops in per_host.items()}

    def _push(self) -> list[str]:
        """Send each host whose desired state changed its whole new state; return the failures
        (the database stays the truth: a host that missed a push is sent it again next time,
        and its agent's own apply converges too)."""
        with self._push_lock:
            states = [(h, url, st, st.model_dump_json()) for h, (url, st) in sorted(self.desired_states().items())]
            changed = [item for item in states if self._pushed.get(item[0]) != item[3]]
            if not changed:
                return []

            def push(item) -> str | None:
                host, url, state, key = item
                try:
                    self.dataplane.push(host, url, state)
                    self._pushed[host] = key
                    return None
                except Exception as e:  # any driver or transport error: report it, push the other hosts
                    log.warning("push to %s failed: %s", host, e)
                    self._pushed.pop(host, None)
                    return f"{host}: {e}"

            # every agent at once: each creates and wires its L1s in parallel, so a reservation
            # takes about as long as its slowest host
            with ThreadPoolExecutor(max_workers=min(16, len(changed))) as pool:
                return [f for f in pool.map(push, changed) if f]

    def _run_pushing(
        self, fn: Callable[[Session], Outcome | tuple[Outcome, bool]], *, admission: bool = False
    ) -> tuple[Reservation, list[str]]:
        with self.db.transaction() as s:
            if admission:
                self.db.admission_lock(s)
            result = fn(s)
        outcome, changed = result if isinstance(result, tuple) else (result, False)
        failures = self._push() if changed else []
        if outcome.error is not None:
            raise outcome.error
        return outcome.reservation, failures

    def _run(self, fn, *, admission: bool = False) -> Reservation:
        return self._run_pushing(fn, admission=admission)[0]

    # ---------------------------------------------------------------- NSI messages
    def reserve(self, tenant_id: int, req: ReserveRequest) -> Reservation:
        now = self.clock()
        start = to_epoch(req.start) if req.start else now
        end = to_epoch(req.end) if req.end else start + req.duration_s
        if end <= now:
            raise InvalidInput("the reservation would end in the past", field="end")

        def tx(s: Session) -> Outcome:
            site = self._haas_site(s, req.site)
            model = req.service_model or self._site_model(s, tenant_id)
            res = Reservation(
                id=uuid.uuid4().hex, tenant_id=tenant_id, site_id=site.id, description=req.description,
                service_model=model, routing=req.routing.model_dump() if req.routing else None,
                version=1, committed_version=0, reservation_state=RESERVATION.initial,
                provision_state=PROVISION.initial, lifecycle_state=LIFECYCLE.initial, data_plane_active=False, created_at=now,
            )
            res.criteria.append(Criteria(version=1, start=start, end=end, items=[i.model_dump() for i in req.items]))
            s.add(res)
            s.flush()
            return Outcome(res, self._check(s, res, now))

        return self._run(tx, admission=True)

    def modify(self, tenant_id: int | None, rid: str, req: ModifyRequest) -> Reservation:
        now = self.clock()

        def tx(s: Session) -> Outcome:
            res = self._load(s, rid, tenant_id)
            if res.lifecycle_state != LifecycleState.CREATED:
                raise IllegalTransition("lifecycle", res.lifecycle_state, "modify")
            if res.committed_version == 0:
                raise IllegalTransition("reservation", res.reservation_state, "modify", "nothing committed yet")
            if not MACHINES["reservation"].accepts(res.reservation_state, "reserve"):
                raise IllegalTransition("reservation", res.reservation_state, "modify")
            if req.version <= res.version:
                raise VersionConflict(f"version must be higher than the current {res.version}", current=res.version)
            base = res.criteria_for(res.committed_version)
            items = copy.deepcopy(base.items)
            for field, kind, key in (("count", "compute", "count"), ("bandwidth_mbps", "network", "bandwidth_mbps"),
                                     ("size_gb", "storage", "size_gb")):
                value = getattr(req, field)
                if value is None:
                    continue
                matching = [i for i in items if i["kind"] == kind]
                if len(matching) != 1:
                    raise InvalidInput(f"{field} needs exactly one {kind} item; the reservation has {len(matching)}",
                                       field=field)
                matching[0][key] = value
            end = to_epoch(req.end) if req.end else base.end
            if end <= max(base.start, now):
                raise InvalidInput("the new end must be after the start and in the future", field="end")
            res.version = req.version
            res.criteria.append(Criteria(version=req.version, start=base.start, end=end, items=items))
            s.flush()
            return Outcome(res, self._check(s, res, now))

        return self._run(tx, admission=True)

    def commit(self, tenant_id: int | None, rid: str) -> Reservation:
        now = self.clock()

        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            if res.reservation_state == ReservationState.HELD and res.hold_expires_at is not None and now >= res.hold_expires_at:
                self._timeout(s, res)  # the scheduler has not got to it yet
                return Outcome(res, IllegalTransition("reservation", res.reservation_state, "commit",
                                                      "the hold timer expired"))
            self._transition(s, res, "reservation", "commit")
            ctx = self._context(s, res, res.version)
            try:
                for m in self._involved(res):
                    m.commit(ctx, res.version)
            except IrisError as e:
                self._drop_held(s, res)
                self._transition(s, res, "reservation", "commit_fail")
                self._event(s, res, "errorEvent", message=f"commit failed: {e.message}")
                return Outcome(res, e)
            res.committed_version = res.version
            res.hold_expires_at = None
            self._transition(s, res, "reservation", "commit_ok")
            return Outcome(res), self._sync(s, res, now)

        return self._run(tx)

    def abort(self, tenant_id: int | None, rid: str) -> Reservation:
        def tx(s: Session) -> Outcome:
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "reservation", "abort")
            self._drop_held(s, res)
            self._transition(s, res, "reservation", "abort_ok")
            return Outcome(res)

        return self._run(tx)

    def provision(self, tenant_id: int | None, rid: str) -> Reservation:
        now = self.clock()

        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            if res.lifecycle_state != LifecycleState.CREATED:
                raise IllegalTransition("lifecycle", res.lifecycle_state, "provision")
            if res.committed_version == 0:
                raise IllegalTransition("provision", res.provision_state, "provision", "no version committed yet")
            self._transition(s, res, "provision", "provision")
            for m in self._involved(res):
                m.provision(self._context(s, res, res.committed_version))
            return Outcome(res), self._sync(s, res, now)

        _, failures = self._run_pushing(tx)

        def finish(s: Session):
            res = self._load(s, rid, tenant_id)
            if res.provision_state != ProvisionState.PROVISIONING:  # someone else moved it on meanwhile
                return Outcome(res)
            if failures:
                self._transition(s, res, "provision", "provision_fail")
                message = "the data plane did not take the reservation: " + "; ".join(failures)
                self._event(s, res, "errorEvent", message=message)
                return Outcome(res, DataPlaneError(message, reservation_id=rid)), self._sync(s, res, self.clock())
            self._transition(s, res, "provision", "provision_ok")
            return Outcome(res)

        return self._run(finish)

    def release(self, tenant_id: int | None, rid: str) -> Reservation:
        now = self.clock()

        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "provision", "release")
            for m in self._involved(res):
                m.release(self._context(s, res, res.committed_version))
            self._transition(s, res, "provision", "release_ok")
            return Outcome(res), self._sync(s, res, now)

        return self._run(tx)

    def terminate(self, tenant_id: int | None, rid: str) -> Reservation:
        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "lifecycle", "terminate")
            changed = self._end(s, res)
            self._transition(s, res, "lifecycle", "terminate_ok")
            return Outcome(res), changed

        return self._run(tx)

    def force_end(self, rid: str, reason: str) -> Reservation:
        """Admin: end a reservation abnormally (Created -> Failed), freeing everything."""

        def tx(s: Session):
            res = self._load(s, rid, None)
            return Outcome(res), self._force_end(s, res, reason)

        return self._run(tx)

    def _force_end(self, s: Session, res: Reservation, reason: str) -> bool:
        self._transition(s, res, "lifecycle", "forced_end")
        self._event(s, res, "errorEvent", message=reason)
        return self._end(s, res)

    def set_node_state(self, name: str, state: NodeState) -> Node:
        """Admin: set an L0's state. ``down`` also ends (Failed) every reservation holding an
        allocation on it that has not ended, in the same transaction: the node and its
        reservations change together or not at all."""
        now = self.clock()
        with self.db.transaction() as s:
            self.db.admission_lock(s)  # no reserve may place an L1 on the node meanwhile
            node = s.scalar(select(Node).where(Node.name == name).with_for_update())
            if node is None:
                raise NotFound(f"no node named {name}")
            node.state = NodeState(state)
            bump_inventory(s)
            changed = False
            if node.state == NodeState.DOWN:
                holding = select(Allocation.reservation_id).where(
                    Allocation.resource_kind == "node", Allocation.resource_id == node.id, Allocation.end > now)
                # Only a Created reservation holds allocations: every other lifecycle state freed them.
                for res in s.scalars(select(Reservation).where(Reservation.id.in_(holding))
                                     .order_by(Reservation.id).with_for_update()):
                    changed |= self._force_end(s, res, f"node {name} is down")
        if changed:
            self._push()
        return node

    def _end(self, s: Session, res: Reservation) -> bool:
        """Release the data plane and free every allocation (end time, termination, forced end)."""
        if res.reservation_state in (ReservationState.HELD, ReservationState.FAILED, ReservationState.TIMEOUT):
            self._transition(s, res, "reservation", "abort")
            self._transition(s, res, "reservation", "abort_ok")
        res.version = res.committed_version or res.version
        res.hold_expires_at = None
        if res.provision_state == ProvisionState.PROVISIONED:
            self._transition(s, res, "provision", "release")
            self._transition(s, res, "provision", "release_ok")
        changed = self._sync(s, res, self.clock())
        ctx = self._context(s, res, res.version)
        for m in self._involved(res):
            m.terminate(ctx)
        return changed

    def _timeout(self, s: Session, res: Reservation) -> None:
        self._transition(s, res, "reservation", "timeout")
        self._event(s, res, "reserveTimeout", version=res.version, timeout_s=self.hold_timeout_s)
        self._drop_held(s, res)

    def _drop_held(self, s: Session, res: Reservation) -> None:
        """Free what the held version holds; the reservation is its last committed version again
        (or, never committed, stays an empty version 1)."""
        ctx = self._context(s, res, res.version)
        for m in self._involved(res):
            m.abort(ctx)
        res.version = res.committed_version or res.version
        res.hold_expires_at = None

    # ---------------------------------------------------------------- scheduler
    def tick(self, now: float | None = None) -> dict[str, int]:
        """Hold timeouts, end times and start times up to ``now``; what the scheduler runs."""
        now = self.clock() if now is None else now
        counts = {"timeouts": 0, "ended": 0, "activated": 0}
        changed = False
        with self.db.transaction() as s:
            self.db.admission_lock(s)
            for res in s.scalars(
                select(Reservation).where(
                    Reservation.reservation_state == ReservationState.HELD, Reservation.hold_expires_at <= now
                ).with_for_update()
            ):
                self._timeout(s, res)
                counts["timeouts"] += 1
            committed = and_(Criteria.reservation_id == Reservation.id, Criteria.version == Reservation.committed_version)
            for res in s.scalars(
                select(Reservation).join(Criteria, committed).where(
                    Reservation.lifecycle_state == LifecycleState.CREATED, Criteria.end <= now
                ).with_for_update(of=Reservation)
            ):
                self._transition(s, res, "lifecycle", "end_time")
                changed |= self._end(s, res)
                counts["ended"] += 1
            for res in s.scalars(
                select(Reservation).join(Criteria, committed).where(
                    Reservation.lifecycle_state == LifecycleState.CREATED,
                    Reservation.provision_state == ProvisionState.PROVISIONED,
                    Reservation.data_plane_active.is_(False), Criteria.start <= now, Criteria.end > now,
                ).with_for_update(of=Reservation)
            ):
                changed |= self._sync(s, res, now)
                counts["activated"] += 1
        if changed:
            self._push()
        return counts

    # ---------------------------------------------------------------- queries
    def get(self, tenant_id: int | None, rid: str) -> tuple[Reservation, Tenant, list[dict]]:
        """A reservation, its tenant, and the resources each manager holds for it."""
        with self.db.transaction() as s:
            res = s.scalar(select(Reservation).where(Reservation.id == rid))
            if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
                raise NotFound(f"no reservation {rid}")
            ctx = self._context(s, res, res.version)
            resources = [r for m in self._involved(res) for r in m.query(ctx)]
            return res, ctx.tenant, resources

    def list(self, tenant_id: int | None) -> list[tuple[Reservation, Tenant]]:
        with self.db.transaction() as s:
            q = select(Reservation, Tenant).join(Tenant, Tenant.id == Reservation.tenant_id).order_by(
                Reservation.created_at)
            if tenant_id is not None:
                q = q.where(Reservation.tenant_id == tenant_id)
            out = [(r, t) for r, t in s.execute(q)]
            for r, _ in out:
                _ = r.criteria
        return out

    def events(self, tenant_id: int | None, rid: str) -> list[Event]:
        with self.db.transaction() as s:
            res = s.get(Reservation, rid)
            if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
                raise NotFound(f"no reservation {rid}")
            return list(s.scalars(select(Event).where(Event.reservation_id == rid).order_by(Event.id)))

    def desired_state(self, host: str) -> DesiredState:
        states = self.desired_states()
        if host not in states:
            raise NotFound(f"no node or gateway named {host}")
        return states[host][1]

    def availability(
        self,
        *,
        tenant_id: int | None,
        site: str | None,
        count: int,
        l1_kind: str,
        cpus: int,
        memory_mb: int,
        disk_gb: int,
        duration_s: float,
        bandwidth_mbps: int = 0,
        tenant_site: str | None = None,
        size_gb: int = 0,
        not_before: float | None = None,
        max_candidates: int = 5000,
    ) -> dict:
        """The earliest window of ``duration_s`` at or after ``not_before`` in which everything fits.

        Each manager the request concerns answers its own free capacity (``ResourceManager.availability``).
        Capacity only frees up when an allocation ends, so the candidate starts are ``not_before``
        and every later end of an allocation on those resources; the first that fits is the answer.
        """
        now = self.clock()
        t0 = max(now, not_before or now)
        items: list[dict] = [{"kind": "compute", "count": count, "l1_kind": L1Kind(l1_kind), "cpus": cpus,
                              "memory_mb": memory_mb, "disk_gb": disk_gb}]
        if bandwidth_mbps:
            items.append({"kind": "network", "bandwidth_mbps": bandwidth_mbps, "tenant_site": tenant_site})
        if size_gb:
            items.append({"kind": "storage", "size_gb": size_gb})
        with self.db.transaction() as s:
            q = Query(session=s, site=self._haas_site(s, site),
                      tenant=s.get(Tenant, tenant_id) if tenant_id is not None else None, start=t0)
            offers = [self.managers[item["kind"]].availability(q, item) for item in items]
        ends = sorted({e for o in offers for e in o.ends() if e > t0})[: max_candidates - 1]
        for t in [t0, *ends]:
            hi = t + duration_s
            answer: dict = {"start": t, "end": hi, "bandwidth_free_mbps": None, "storage_free_gb": None}
            for offer in offers:
                report = offer.fit(t, hi)
                if report is None:
                    break
                answer |= report
            else:
                return answer
        raise ReserveFailed(f"no window of {duration_s:.0f} s found among the next {max_candidates} candidate starts")
