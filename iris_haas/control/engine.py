"""The resource coordinator: NSI state machines over the managers, with two-phase commit.

Every public method is one database transaction: it either applies completely or not at all.
Desired data-plane state is derived from the active reservations, per tenant, as each transaction
changes them (:mod:`iris_haas.control.desired`), and pushed to the hosts whose state changed,
after the transaction commits.
"""

from __future__ import annotations

import builtins
import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Select, and_, false, select
from sqlalchemy.orm import Session

from iris_haas.contract import failpoints
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
from iris_haas.contract.types import (
    HORIZON_S,
    L1Kind,
    LifecycleState,
    NodeState,
    ProvisionState,
    ReservationState,
    ServiceModel,
)
from iris_haas.control.desired import DesiredCache
from iris_haas.control.events import tenant_events
from iris_haas.control.inventory import find_image
from iris_haas.control.lease import Lease
from iris_haas.control.schemas import ModifyRequest, ReserveRequest, from_epoch, to_epoch
from iris_haas.control.states import LIFECYCLE, MACHINES, PROVISION, RESERVATION
from iris_haas.control.sync import DataPlane, InMemoryDataPlane, Syncer, Target
from iris_haas.managers.base import Context, Query, ResourceManager, segment_of
from iris_haas.managers.crm import ComputeManager
from iris_haas.managers.nrm import NetworkManager
from iris_haas.managers.srm import StorageManager
from iris_haas.nsi.messages import Message
from iris_haas.nsi.requester import NsiError, Provider, Requester, from_provider
from iris_haas.store import calendar
from iris_haas.store.db import Database
from iris_haas.store.models import (
    Allocation,
    Criteria,
    Event,
    HostSync,
    Node,
    Reservation,
    Site,
    StoragePool,
    Tenant,
    bump_data_plane,
    bump_inventory,
    give_tunnel_key,
    next_number,
)

log = logging.getLogger("iris.coordinator")

STATE_ATTR = {"reservation": "reservation_state", "provision": "provision_state", "lifecycle": "lifecycle_state"}


@dataclass
class Outcome:
    """What a transaction decided; an error here is raised only after the transaction commits,
    because the state change it records (ReserveFailed, a timeout) must persist."""

    reservation: Reservation
    error: IrisError | None = None


def _why(error: str | None) -> str:
    if error is None:
        return "took the state but is not in sync with it"
    if "did not answer" in error or "Timeout" in error:
        return "did not answer in time"
    return "unreachable or refused the state"


def _provider_error(e: IrisError) -> dict:
    """An external provider's own errorId and text (an NSI link's), for the tenant's errorEvent."""
    return {k: v for k, v in e.extra.items() if k.startswith("nsi_")}


class Coordinator:
    def __init__(
        self,
        db: Database,
        *,
        hold_timeout_s: float = 60.0,
        dataplane: DataPlane | None = None,
        clock: Callable[[], float] = time.time,
        push_timeout_s: float = 60.0,
        provision_timeout_s: float = 180.0,
        poll_interval_s: float = 5.0,
        end_warning_s: float = 600.0,
        nsi: Requester | None = None,
        full_resync_every: int = 300,
    ):
        self.db = db
        self.hold_timeout_s = hold_timeout_s
        self.dataplane = dataplane if dataplane is not None else InMemoryDataPlane()
        self.clock = clock
        # how long an API call waits for the hosts it changed (a slow host is then left to the
        # reconciler), and how long provision waits for its hosts to confirm
        self.push_timeout_s, self.provision_timeout_s = push_timeout_s, provision_timeout_s
        self.poll_interval_s = poll_interval_s
        self.end_warning_s = end_warning_s  # endingSoon this long before a reservation's end (0: never)
        self.lease = Lease(db)
        self.nsi = nsi  # Iris as an NSI requester, for the links of kind nsi
        if nsi is not None:
            nsi.on_notification = self.nsi_notification
        network, compute, storage = NetworkManager(nsi), ComputeManager(), StorageManager()
        self.managers: dict[str, ResourceManager] = {"network": network, "compute": compute, "storage": storage}
        # NSI: commit the externally controlled part (the network path) first, then what Iris controls.
        self.commit_order: list[ResourceManager] = [network, compute, storage]
        # every host's desired state, re-derived per tenant as its data plane changes; the
        # reconciler derives all of it again every ``full_resync_every`` passes
        self.desired = DesiredCache(self.commit_order)
        self.sync = Syncer(db, self.dataplane, self.desired, clock, on_refresh=self._drain,
                           full_every=full_resync_every)
        # NSI: a coordinator that comes to lead (its start, a take-over) asks each provider of an
        # open connection for its state (querySummarySync); a provider not reached is asked again
        self._leading = False
        self._nsi_pending: set[Provider] | None = None  # None: not yet known which
        self._asking: set[str] = set()  # reservations whose providers this coordinator is asking now
        self._nsi_retry_at = 0.0

    def close(self) -> None:
        """Give up the leadership (another coordinator takes over at once) and stop pushing."""
        self.lease.release()
        self.sync.close()
        if self.nsi is not None:
            self.nsi.close()

    # ---------------------------------------------------------------- helpers
    def _event(self, s: Session, res: Reservation, type_: str, **detail) -> None:
        self.db.add_event(s, Event(reservation_id=res.id, at=self.clock(), type=type_, detail=detail))

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
        model = ServiceModel(models.pop() or ServiceModel.NODE) if len(models) == 1 else ServiceModel.NODE
        if model == ServiceModel.ROUTED:
            raise InvalidInput("a routed (model c) reservation names its subnet: give service_model c and routing",
                               field="routing")
        return model

    def _check(self, s: Session, res: Reservation, now: float) -> IrisError | None:
        """ReserveStart -> ReserveChecking -> ReserveHeld | ReserveFailed, over every item."""
        self._transition(s, res, "reservation", "reserve")
        ctx = self._context(s, res, res.version)
        try:
            for index, item in enumerate(res.criteria_at(res.version).items):
                self.managers[item["kind"]].reserve(ctx, index, item)
        except ReserveFailed as e:
            return self._reserve_failed(s, res, ctx, e)
        if any(a.resource_kind == "link" and "checking" in a.detail.get("nsi", {}) for a in ctx.held):
            self._asking.add(res.id)  # ReserveChecking until its providers answer: ``_ask_providers``
            return None
        self._transition(s, res, "reservation", "reserve_ok")
        res.hold_expires_at = now + self.hold_timeout_s
        return None

    def _reserve_failed(self, s: Session, res: Reservation, ctx: Context, e: ReserveFailed, **detail) -> ReserveFailed:
        """ReserveChecking -> ReserveFailed: every held child aborted (a failed child's siblings,
        the connections a provider confirmed), an errorEvent with ``e``'s message and provider
        error."""
        for m in self._involved(res):
            m.abort(ctx)
        self._transition(s, res, "reservation", "reserve_fail")
        self._event(s, res, "errorEvent", message=e.message, version=res.version, **_provider_error(e), **detail)
        e.extra["reservation_id"] = res.id
        return e

    def _ask_providers(self, res: Reservation) -> Reservation:
        """A reservation left in ReserveChecking by its NSI items: each connection is asked of its
        provider outside any transaction (the reservation visible as ReserveChecking meanwhile,
        nothing else waiting on it; each ask bounded by the requester's timeout), then the answers
        decide: every connection confirmed, ReserveHeld; any refused, ReserveFailed with the
        provider's error, every held sibling aborted (the confirmed connections too). A
        reservation that ended meanwhile keeps its end; what the providers confirmed for it is
        terminated."""
        network = self.managers.get("network")
        if res.reservation_state != ReservationState.CHECKING or not isinstance(network, NetworkManager):
            return res
        rid = res.id
        try:
            with self.db.transaction() as s:
                r = self._load(s, rid, None)
                ctx = self._context(s, r, r.version)
                calls = [(a.id, a.item, network.ask(ctx, a)) for a in network.checking(ctx)]
        except BaseException:
            self._asking.discard(rid)  # the lead's reconciliation ends it
            raise
        answers: list[tuple[int, dict | ReserveFailed]] = []
        for aid, item, call in calls:
            try:
                answers.append((aid, call()))
            except Exception as e:  # noqa: BLE001 - whatever went wrong on the way to the provider: a refusal
                log.exception("NSI reserve of network item %s of %s", item, rid)
                answers.append((aid, ReserveFailed(f"network item {item}: the NSI request failed: {type(e).__name__}")))
        new = {x["connection_id"] for _, x in answers if isinstance(x, dict) and x.pop("new")}
        now = self.clock()

        def tx(s: Session):
            r = self._load(s, rid, None)
            ctx = self._context(s, r, r.version)
            held = {a.id: a for a in network.checking(ctx)}
            if r.reservation_state != ReservationState.CHECKING or set(held) != {aid for aid, _ in answers}:
                for _, x in answers:
                    if isinstance(x, dict) and x["connection_id"] in new:
                        network.forget(x)
                return Outcome(r)
            for aid, x in answers:
                if isinstance(x, dict):
                    held[aid].detail = {**held[aid].detail, "nsi": x}
            failed = next((x for _, x in answers if isinstance(x, ReserveFailed)), None)
            if failed is not None:
                return Outcome(r, self._reserve_failed(s, r, ctx, failed))
            self._transition(s, r, "reservation", "reserve_ok")
            r.hold_expires_at = now + self.hold_timeout_s
            return Outcome(r)

        try:
            return self._run(tx, admission=True, step="reserve_checked")
        finally:
            self._asking.discard(rid)

    def _fail_stale_checking(self) -> int:
        """Reservations left in ReserveChecking by a coordinator that stopped while it asked their
        providers (none of this one's own asks): ReserveFailed, everything held freed. A
        connection the provider confirmed meanwhile is unknown to Iris; the provider's own hold
        timer ends it."""
        with self.db.transaction() as s:
            stale = [r for r in s.scalars(select(Reservation.id).where(
                Reservation.reservation_state == ReservationState.CHECKING)) if r not in self._asking]

        def fail(rid: str):
            def tx(s: Session):
                res = self._load(s, rid, None)
                if res.reservation_state != ReservationState.CHECKING or rid in self._asking:
                    return Outcome(res)
                self._reserve_failed(s, res, self._context(s, res, res.version), ReserveFailed(
                    "the coordinator stopped while it waited for the NSI provider's answer; nothing of this version "
                    "is held"), reconciled=True)
                return Outcome(res)
            return tx

        for rid in stale:
            self._run(fail(rid), admission=True, step="reserve_stale")
        return len(stale)

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
        # counted at the end of the transaction (``_count``): the tenant's part is planned again
        s.info.setdefault("data_plane_tenants", set()).add(res.tenant_id)
        # decided, not yet confirmed: provision records the confirmation once its hosts hold it
        self._event(s, res, "dataPlaneStateChange", active=active, version=res.committed_version,
                    versionConsistent=False)
        return True

    @staticmethod
    def _count(s: Session) -> None:
        """Count the data-plane changes of this transaction (``_sync``) per tenant. Last in the
        transaction, after every reservation lock it takes: a transaction that holds a count's
        row lock waits for no reservation, so no two wait for each other."""
        bump_data_plane(s, s.info.pop("data_plane_tenants", ()))

    def desired_states(self) -> dict[str, tuple[str | None, DesiredState]]:
        """Every host's desired state (agent URL, ops at their generation)."""
        targets = self.sync.refresh(hosts=None)
        return {h: (t.url, t.state) for h, t in targets.items()}

    def _drain(self, s: Session, rows: dict[str, HostSync]) -> None:
        """Draining allocations: note the generation that removes each from its host, and free
        those whose host has acknowledged it (or that no host holds). ``rows``: the host_sync
        rows at hand; any other is read."""
        draining = list(s.scalars(select(Allocation).where(Allocation.resource_kind.in_(["node", "pool"]),
                                                           Allocation.status == calendar.DRAINING)))
        if not draining:
            return
        ids = {k: {a.resource_id for a in draining if a.resource_kind == k} for k in ("node", "pool")}
        nodes = dict(s.execute(select(Node.id, Node.name).where(Node.id.in_(ids["node"]))).all())
        pools = dict(s.execute(select(StoragePool.id, StoragePool.host).where(StoragePool.id.in_(ids["pool"]))).all())
        for a in draining:
            host = nodes.get(a.resource_id) if a.resource_kind == "node" else pools.get(a.resource_id)
            row = (rows.get(host) or s.get(HostSync, host)) if host else None
            if row is None:
                s.delete(a)
                continue
            if a.drain_generation is None:
                a.drain_generation = row.generation
            if row.acked >= a.drain_generation:
                s.delete(a)

    @staticmethod
    def _draining(s: Session) -> bool:
        # by kind and status, so the index (resource_kind, status) answers it without a scan
        return s.scalar(select(Allocation.id).where(Allocation.resource_kind.in_(["node", "pool"]),
                                                    Allocation.status == calendar.DRAINING).limit(1)) is not None

    def _purge(self) -> None:
        with self.db.transaction() as s:
            self._drain(s, {})

    def _acked(self, generations: dict[str, int]) -> dict[str, bool]:
        """Whether each host holds (at least) the given generation and is in sync with it."""
        with self.db.transaction() as s:
            rows = {r.host: r for r in s.scalars(select(HostSync).where(HostSync.host.in_(list(generations))))}
        return {h: h in rows and rows[h].acked >= g and rows[h].in_sync for h, g in generations.items()}

    def _renumbered(self, generations: dict[str, int]) -> bool:
        """Whether any of these hosts has been given a generation past the one named."""
        with self.db.transaction() as s:
            rows = dict(s.execute(select(HostSync.host, HostSync.generation).where(
                HostSync.host.in_(list(generations)))).all())
        return any(rows.get(h, 0) > g for h, g in generations.items())

    def _hosts_of(self, targets: dict[str, Target], res: Reservation, tenant: Tenant) -> dict[str, int]:
        """The hosts a reservation's data plane is on (its own ops, and its tenant's bridge and
        tunnels on its segment), each with the generation that carries it. Read from the tenant's
        part alone: every op of the reservation or its segment is the tenant's. ``targets`` holds
        the tenant's hosts (``refresh(tenants=...)``)."""
        owner, bridge = f"tenant:{tenant.name}", segment_of(res, tenant).bridge
        out = {}
        for h, ops in self.desired.part(tenant.id).items():
            if h in targets and any(o.owner == res.id or (o.owner == owner and bridge in (
                    getattr(o, "bridge", None), getattr(o, "name", None))) for o in ops):
                out[h] = targets[h].state.version
        return out

    def _confirm(self, rid: str, targets: dict[str, Target]) -> None:
        """Record that the reservation's data plane is consistent (``versionConsistent``) once
        every host it is on holds the generation that carries its version: the hosts of its ops
        while active; once inactive, the hosts this change gave a new generation."""
        with self.db.transaction() as s:
            res = s.get(Reservation, rid)
            if res is None:
                return
            tenant = s.get_one(Tenant, res.tenant_id)
            if res.data_plane_active:
                hosts = self._hosts_of(targets, res, tenant)
            else:
                hosts = {h: t.state.version for h, t in targets.items() if t.bumped}
            rows = {r.host: r for r in s.scalars(select(HostSync).where(HostSync.host.in_(list(hosts))))}
            if all(h in rows and rows[h].acked >= g and rows[h].in_sync for h, g in hosts.items()):
                self._event(s, res, "dataPlaneStateChange", active=res.data_plane_active,
                            version=res.committed_version, versionConsistent=True, hosts=sorted(hosts))

    def _push(self, step: str, timeout: float | None = None, tenants: Iterable[int] = ()
              ) -> tuple[dict[str, Target], dict[str, str | None]]:
        """After a transaction that may have changed the data plane: new generations for the hosts
        the change concerns, then each of them that is behind (and each host of ``tenants``) is
        sent its state (waiting at most ``timeout``). Any other host behind is the reconciler's."""
        targets = self.sync.refresh(tenants=tenants)
        results = self.sync.push([t for t in targets.values() if t.behind],
                                 self.push_timeout_s if timeout is None else timeout)
        self._purge()
        return targets, results

    def _run_pushing(
        self, fn: Callable[[Session], Outcome | tuple[Outcome, bool]], *, admission: bool = False, step: str = ""
    ) -> tuple[Reservation, list[str]]:
        with self.db.transaction() as s:
            if admission:
                self.db.admission_lock(s)
            result = fn(s)
            outcome, changed = result if isinstance(result, tuple) else (result, False)
            draining = not changed and self._draining(s)
            self._count(s)
            failpoints.hit(f"{step}.before_commit")
        failpoints.hit(f"{step}.after_commit")
        failures = []
        if changed:
            # the database is the truth from here: a host not reached now is the reconciler's
            targets, results = self._push(step, tenants=[outcome.reservation.tenant_id])
            failures = [f"{h}: {e}" for h, e in sorted(results.items()) if e]
            self._confirm(outcome.reservation.id, targets)
        elif draining:
            self._push(step)  # what ended is freed once its hosts confirm
        if outcome.error is not None:
            raise outcome.error
        return outcome.reservation, failures

    def _run(self, fn, *, admission: bool = False, step: str = "") -> Reservation:
        return self._run_pushing(fn, admission=admission, step=step)[0]

    # ---------------------------------------------------------------- NSI messages
    def reserve(self, tenant_id: int, req: ReserveRequest) -> Reservation:
        now = self.clock()
        start = to_epoch(req.start) if req.start else now
        end = to_epoch(req.end) if req.end else start + (req.duration_s or 0)
        for name, t in (("start", start), ("end", end)):
            if t > now + HORIZON_S:
                raise InvalidInput(f"{name} is more than {HORIZON_S // (365 * 86400)} years ahead", field=name)
        if end <= now:
            raise InvalidInput("the reservation would end in the past", field="end")

        def tx(s: Session) -> Outcome:
            site = self._haas_site(s, req.site)
            for i, item in enumerate(req.items):
                if item.kind == "compute" and item.image is not None:
                    find_image(s, item.image, item.l1_kind, f"items.{i}.image")
            model = req.service_model or self._site_model(s, tenant_id)
            res = Reservation(
                id=uuid.uuid4().hex, tenant_id=tenant_id, site_id=site.id, description=req.description,
                service_model=model, routing=req.routing.model_dump() if req.routing else None,
                version=1, committed_version=0, reservation_state=RESERVATION.initial,
                provision_state=PROVISION.initial, lifecycle_state=LIFECYCLE.initial, data_plane_active=False, created_at=now,
            )
            res.criteria.append(Criteria(version=1, start=start, end=end, items=[i.model_dump() for i in req.items]))
            if model in (ServiceModel.POD, ServiceModel.ROUTED):  # a segment of its own, with its own key
                res.segment_no = next_number(s, "segment")
                res.segment_key = give_tunnel_key(s, f"segment:{res.segment_no}")
            s.add(res)
            s.flush()
            return Outcome(res, self._check(s, res, now))

        return self._ask_providers(self._run(tx, admission=True, step="reserve"))

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
            base = res.criteria_at(res.committed_version)
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
            # a version that was held once and then aborted, failed or timed out may be asked for
            # again: its old criteria go first
            for old in [c for c in res.criteria if c.version >= req.version]:
                res.criteria.remove(old)
            s.flush()
            res.version = req.version
            res.criteria.append(Criteria(version=req.version, start=base.start, end=end, items=items))
            s.flush()
            return Outcome(res, self._check(s, res, now))

        return self._ask_providers(self._run(tx, admission=True, step="modify"))

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
                self._event(s, res, "errorEvent", message=f"commit failed: {e.message}", **_provider_error(e))
                return Outcome(res, e)
            res.committed_version = res.version
            res.committed_end = res.criteria_at(res.version).end
            res.hold_expires_at = None
            self._transition(s, res, "reservation", "commit_ok")
            return Outcome(res), self._sync(s, res, now)

        return self._run(tx, step="commit")

    def abort(self, tenant_id: int | None, rid: str) -> Reservation:
        def tx(s: Session) -> Outcome:
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "reservation", "abort")
            self._drop_held(s, res)
            self._transition(s, res, "reservation", "abort_ok")
            return Outcome(res)

        return self._run(tx, step="abort")

    def provision(self, tenant_id: int | None, rid: str) -> Reservation:
        """Released -> Provisioning; the data plane is activated (when the schedule says so) and
        pushed; Provisioned once every host of the reservation has acknowledged the generation
        that carries it, else back to Released with an errorEvent naming those hosts."""
        now = self.clock()
        with self.db.transaction() as s:
            res = self._load(s, rid, tenant_id)
            if res.lifecycle_state != LifecycleState.CREATED:
                raise IllegalTransition("lifecycle", res.lifecycle_state, "provision")
            if res.committed_version == 0:
                raise IllegalTransition("provision", res.provision_state, "provision", "no version committed yet")
            self._transition(s, res, "provision", "provision")
            for m in self._involved(res):
                m.provision(self._context(s, res, res.committed_version))
            self._sync(s, res, now)
            active = res.data_plane_active
            tenant = s.get_one(Tenant, res.tenant_id)
            self._count(s)
            failpoints.hit("provision.before_commit")
        failpoints.hit("provision.after_commit")
        deadline = time.monotonic() + self.provision_timeout_s
        targets, results = self._push("provision", self.provision_timeout_s, tenants=[tenant.id])
        mine = self._hosts_of(targets, res, tenant) if active else {}
        missing = sorted(h for h, ok in self._acked(mine).items() if not ok)
        for _ in range(3):
            # a newer state was numbered for a host meanwhile (a provider's dataPlaneStateChange,
            # another reservation's change): the host was right not to settle on ours; the
            # reservation waits for that one instead, within the same bound
            if not missing or time.monotonic() >= deadline or not self._renumbered({h: mine[h] for h in missing}):
                break
            targets, again = self._push("provision", deadline - time.monotonic(), tenants=[tenant.id])
            results.update(again)
            mine = self._hosts_of(targets, res, tenant)
            missing = sorted(h for h, ok in self._acked(mine).items() if not ok)

        def finish(s: Session):
            res = self._load(s, rid, tenant_id)
            if res.provision_state != ProvisionState.PROVISIONING:  # someone else moved it on meanwhile
                return Outcome(res)
            if missing:
                # only this reservation's hosts, and no host's own words: an agent's error may
                # quote another tenant's objects
                why = "; ".join(f"{h}: {_why(results.get(h))}" for h in missing)
                message = f"the data plane did not take the reservation: {why}"
                self._transition(s, res, "provision", "provision_fail")
                self._event(s, res, "errorEvent", message=message, hosts=missing)
                return Outcome(res, DataPlaneError(message, reservation_id=rid)), self._sync(s, res, self.clock())
            self._transition(s, res, "provision", "provision_ok")
            if active:
                self._event(s, res, "dataPlaneStateChange", active=True, version=res.committed_version,
                            versionConsistent=True, hosts=sorted(mine))
            return Outcome(res)

        return self._run(finish, step="provision_finish")

    def release(self, tenant_id: int | None, rid: str) -> Reservation:
        now = self.clock()

        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "provision", "release")
            for m in self._involved(res):
                m.release(self._context(s, res, res.committed_version))
            self._transition(s, res, "provision", "release_ok")
            return Outcome(res), self._sync(s, res, now)

        return self._run(tx, step="release")

    def terminate(self, tenant_id: int | None, rid: str) -> Reservation:
        def tx(s: Session):
            res = self._load(s, rid, tenant_id)
            self._transition(s, res, "lifecycle", "terminate")
            changed = self._end(s, res)
            self._transition(s, res, "lifecycle", "terminate_ok")
            return Outcome(res), changed

        return self._run(tx, step="terminate")

    def force_end(self, rid: str, reason: str) -> Reservation:
        """Admin: end a reservation abnormally (Created -> Failed), freeing everything."""

        def tx(s: Session):
            res = self._load(s, rid, None)
            return Outcome(res), self._force_end(s, res, reason)

        return self._run(tx, step="force_end")

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
            self._count(s)
        if changed:
            self._push("node_down")
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
        """Hold timeouts, end times and start times up to ``now``, then the reconciler: what the
        scheduler runs. Only the leader does it (see :mod:`iris_haas.control.lease`)."""
        now = self.clock() if now is None else now
        counts = {"timeouts": 0, "ended": 0, "activated": 0, "warned": 0}
        if not self.lease.held():
            self._leading = False
            return counts
        if not self._leading:
            self._leading, self._nsi_pending = True, None
        self.reconcile_nsi()
        changed = False
        expired, ended, starting, ending = self._scheduled(now)
        with self.db.reading() as s:  # most ticks find nothing due: no lock is taken for them
            # (no LIMIT: under one, PostgreSQL's planner may expect an early match and walk every
            # live reservation, as it did for the join these queries replaced, instead of the index)
            due = any(s.execute(q).first() is not None for q in (expired, ended, starting, ending))
        if due:
            with self.db.transaction() as s:
                self.db.admission_lock(s)
                for res in s.scalars(expired.with_for_update()):
                    self._timeout(s, res)
                    counts["timeouts"] += 1
                for res in s.scalars(ended.with_for_update()):
                    self._transition(s, res, "lifecycle", "end_time")
                    changed |= self._end(s, res)
                    counts["ended"] += 1
                for res in s.scalars(starting.with_for_update(of=Reservation)):
                    changed |= self._sync(s, res, now)
                    counts["activated"] += 1
                for res, end in s.execute(ending):
                    self._event(s, res, "endingSoon", version=res.committed_version,
                                end=from_epoch(end).isoformat().replace("+00:00", "Z"), remaining_s=round(end - now, 3))
                    counts["warned"] += 1
                self._count(s)
        if changed:  # what this tick changed is pushed at once, waiting a little for it
            self._push("tick", timeout=min(5.0, self.push_timeout_s))
        # the reconciler: every host still behind its generation is sent its state again (with
        # backoff, in the background), so what a missed push left undone is finished unaided
        self.sync.reconcile(self.poll_interval_s)
        self._purge()
        self._settle_provisioning(now)
        return counts

    def _scheduled(self, now: float) -> tuple[Select, Select, Select, Select]:
        """What the scheduler acts on at ``now``: held versions past their hold timer; reservations
        past the end of their committed version; provisioned ones whose start has come; and
        (endingSoon, once per reservation) those ``end_warning_s`` before their end, from their
        start on (a reservation shorter than that is warned when it starts)."""
        committed = and_(Criteria.reservation_id == Reservation.id, Criteria.version == Reservation.committed_version)
        created = Reservation.lifecycle_state == LifecycleState.CREATED
        expired = select(Reservation).where(Reservation.reservation_state == ReservationState.HELD,
                                            Reservation.hold_expires_at <= now)
        ended = select(Reservation).where(created, Reservation.committed_end <= now)
        starting = select(Reservation).join(Criteria, committed).where(
            created, Reservation.provision_state == ProvisionState.PROVISIONED,
            Reservation.data_plane_active.is_(False), Criteria.start <= now, Criteria.end > now)
        warned = select(Event.id).where(Event.reservation_id == Reservation.id, Event.type == "endingSoon").exists()
        ending = select(Reservation, Reservation.committed_end).join(Criteria, committed).where(
            created, Reservation.committed_end > now, Reservation.committed_end <= now + self.end_warning_s,
            Criteria.start <= now, ~warned)
        if self.end_warning_s <= 0:
            ending = ending.where(false())
        return expired, ended, starting, ending

    def _settle_provisioning(self, now: float) -> None:
        """A provision whose coordinator died before it finished: Provisioned once its hosts hold
        it, failed (Released, errorEvent) when they still do not after twice the provision
        timeout. No reservation stays in Provisioning for ever."""
        with self.db.transaction() as s:
            stuck = dict(s.execute(select(Reservation.id, Reservation.tenant_id).where(
                Reservation.provision_state == ProvisionState.PROVISIONING)).all())
        if not stuck:
            return
        targets = self.sync.refresh(tenants=set(stuck.values()))
        for rid in stuck:
            with self.db.transaction() as s:
                res = self._load(s, rid, None)
                if res.provision_state != ProvisionState.PROVISIONING:
                    continue
                tenant = s.get_one(Tenant, res.tenant_id)
                mine = self._hosts_of(targets, res, tenant) if res.data_plane_active else {}
                rows = {r.host: r for r in s.scalars(select(HostSync).where(HostSync.host.in_(list(mine))))}
                missing = sorted(h for h, g in mine.items()
                                 if not (h in rows and rows[h].acked >= g and rows[h].in_sync))
                since = s.scalar(select(Event.at).where(Event.reservation_id == rid, Event.type == "transition")
                                 .order_by(Event.id.desc()).limit(1)) or now
                if not missing:
                    self._transition(s, res, "provision", "provision_ok")
                    if res.data_plane_active:
                        self._event(s, res, "dataPlaneStateChange", active=True, version=res.committed_version,
                                    versionConsistent=True, hosts=sorted(mine))
                elif now - since > 2 * self.provision_timeout_s:
                    self._transition(s, res, "provision", "provision_fail")
                    self._event(s, res, "errorEvent", hosts=missing,
                                message="the data plane did not take the reservation: "
                                        + "; ".join(f"{h}: did not confirm in time" for h in missing))
                    self._sync(s, res, now)
                self._count(s)

    # ---------------------------------------------------------------- NSI provider notifications
    def nsi_notification(self, msg: Message, peer: str) -> None:
        """A provider's notification about a connection of an NSI link, from that provider only:
        dataPlaneStateChange drives the network child's data plane (``detail["nsi"]["active"]``);
        reserveTimeout fails the child, and with it the held version (ReserveTimeout, its other
        children aborted); errorEvent reaches the tenant with the provider's errorId and text
        (forcedEnd ends the reservation, Failed)."""
        changed = False
        with self.db.transaction() as s:
            self.db.admission_lock(s)
            # a modify's held version and the committed one share the connection: the held first
            found = next((a for a in s.scalars(
                select(Allocation).where(Allocation.resource_kind == "link", Allocation.status.in_(["held", "committed"]))
                .order_by(Allocation.status.desc(), Allocation.id))
                if a.detail.get("nsi", {}).get("connection_id") == msg.connection_id
                and a.detail["nsi"]["provider_nsa"] == msg.header.provider_nsa), None)
            if found is None or not from_provider(peer, found.detail["nsi"]["provider"]):
                # also the provider's last word on a connection Iris has already freed
                log.info("NSI %s for no connection held here (%s, from %s): ignored", msg.operation,
                         msg.connection_id, peer)
                return
            res = self._load(s, found.reservation_id, None)
            child = {"child": "network", "item": found.item, "connection_id": msg.connection_id}
            if msg.operation == "dataPlaneStateChange":
                if bool(found.detail["nsi"].get("active")) != bool(msg.active):
                    # the gateways carry the tenant's trunk in the circuit only while it is up
                    s.info.setdefault("data_plane_tenants", set()).add(res.tenant_id)
                    changed = True
                found.detail = {**found.detail, "nsi": {**found.detail["nsi"], "active": bool(msg.active)}}
                self._event(s, res, "dataPlaneStateChange", active=bool(msg.active), version=res.committed_version,
                            versionConsistent=bool(msg.consistent), **child)
            elif msg.operation == "reserveTimeout":
                if found.status == "held" and res.reservation_state == ReservationState.HELD:
                    self._event(s, res, "errorEvent", message=f"NSI provider {msg.header.provider_nsa} timed out the "
                                f"held connection {msg.connection_id} after {msg.timeout_s} s", **child)
                    self._timeout(s, res)
            elif msg.operation == "errorEvent":
                e = msg.exception
                self._event(s, res, "errorEvent", message=f"NSI provider {msg.header.provider_nsa}: {msg.event}"
                            + (f": {e.error_id} {e.text}" if e else ""), event=msg.event,
                            **({"nsi_error_id": e.error_id, "nsi_error_text": e.text} if e else {}), **child)
                if msg.event == "forcedEnd" and res.lifecycle_state == LifecycleState.CREATED:
                    changed = self._force_end(s, res, f"NSI provider {msg.header.provider_nsa} ended connection "
                                              f"{msg.connection_id}")
            self._count(s)
        if changed:
            self._push(f"nsi_{msg.operation}", tenants=[res.tenant_id])

    def reconcile_nsi(self) -> int:
        """querySummarySync of every open connection (held or committed) of an NSI link, at its
        provider, and each reservation made consistent with what the provider says: what a
        coordinator that was down (or not leading) missed of its callbacks. Returns how many
        reservations it changed. A provider not reached stays to be asked, at most every
        ``poll_interval_s``.

        * the connection gone at the provider (not known, Terminated or Failed): a committed one
          ends the reservation (Failed, errorEvent); a held one times out the held version;
        * a held connection the provider no longer holds (its reserveTimeout, a failure): the
          held version times out (ReserveTimeout, every held child freed: ``reserveAbort``);
        * a committed connection's provision state is Iris's decision: the provider is sent
          ``provision`` or ``release`` where it differs from the reservation's;
        * its data plane (``nsi.active``) is the provider's: taken from the summary, with a
          ``dataPlaneStateChange`` event (``child: network``, ``reconciled``) where it changed.
        """
        if self.nsi is None or (self._nsi_pending is not None and not self._nsi_pending):
            return 0
        if time.monotonic() < self._nsi_retry_at:
            return 0
        if self._nsi_pending is None:
            self._fail_stale_checking()
        with self.db.transaction() as s:
            open_ = [(a.reservation_id, a.detail["nsi"]) for a in s.scalars(
                select(Allocation).where(Allocation.resource_kind == "link", Allocation.status.in_(["held", "committed"])))
                if "connection_id" in a.detail.get("nsi", {})]
        by_provider: dict[Provider, dict[str, set[str]]] = {}
        for rid, nsi in open_:
            by_provider.setdefault(Provider(nsi["provider"], nsi["provider_nsa"]), {}).setdefault(
                nsi["connection_id"], set()).add(rid)
        if self._nsi_pending is None:
            self._nsi_pending = set(by_provider)
        changed, reservations = False, 0
        for provider in sorted(self._nsi_pending & set(by_provider), key=lambda p: (p.nsa, p.url)):
            connections = by_provider[provider]
            try:
                answer = self.nsi.query(provider, sorted(connections))
            except NsiError as e:
                log.warning("NSI reconciliation with %s: %s; asked again later", provider.nsa, e.message)
                continue
            summaries = {x["connection_id"]: x for x in answer.summaries}
            for rid in sorted(set().union(*connections.values())):
                done = self._reconcile_reservation(rid, provider, summaries)
                changed |= done is True
                reservations += done is not None
            self._nsi_pending.discard(provider)
        self._nsi_pending &= set(by_provider)  # one whose connections ended meanwhile is done
        if self._nsi_pending:
            self._nsi_retry_at = time.monotonic() + self.poll_interval_s
        if changed:
            self._push("nsi_reconcile")
        return reservations

    def _reconcile_reservation(self, rid: str, provider: Provider, summaries: dict[str, dict]) -> bool | None:
        """One reservation's connections at ``provider`` made consistent with the provider's
        summaries (see ``reconcile_nsi``): whether its data plane changed, None if nothing did."""
        assert self.nsi is not None
        touched, changed = False, False
        with self.db.transaction() as s:
            self.db.admission_lock(s)
            res = self._load(s, rid, None)
            mine = [a for a in s.scalars(select(Allocation).where(
                Allocation.reservation_id == rid, Allocation.resource_kind == "link",
                Allocation.status.in_(["held", "committed"])).order_by(Allocation.status.desc(), Allocation.id))
                if a.detail.get("nsi", {}).get("provider_nsa") == provider.nsa and "connection_id" in a.detail["nsi"]]
            for a in mine:
                if a.status not in ("held", "committed"):  # freed by an earlier step of this loop
                    continue
                nsi = a.detail["nsi"]
                cid, x = nsi["connection_id"], summaries.get(nsi["connection_id"])
                child = {"child": "network", "item": a.item, "connection_id": cid, "reconciled": True}
                states = (f"{x['reservation_state']}, {x['provision_state']}, {x['lifecycle_state']}"
                          if x else "not known to it")
                gone = x is None or x["lifecycle_state"] in ("Terminated", "Failed")
                if a.status == "committed" and gone and res.lifecycle_state == LifecycleState.CREATED:
                    changed |= self._force_end(s, res, f"NSI provider {provider.nsa} no longer has connection "
                                               f"{cid} ({states})")
                    touched = True
                    break
                if a.status == "held" and res.reservation_state == ReservationState.HELD and (
                        gone or x is None or x["reservation_state"] != "ReserveHeld"):
                    self._event(s, res, "errorEvent", message=f"NSI provider {provider.nsa} no longer holds "
                                f"connection {cid} at version {a.version} ({states})", **child)
                    self._timeout(s, res)
                    touched = True
                    break
                if a.status != "committed" or x is None:
                    continue
                want = res.provision_state in (ProvisionState.PROVISIONING, ProvisionState.PROVISIONED)
                step = ("provision" if want and x["provision_state"] == "Released" else
                        "release" if not want and x["provision_state"] == "Provisioned" else None)
                if step is not None:
                    try:
                        self.nsi.request(provider, step, cid)
                        log.info("NSI %s of %s: the provider had it %s, the reservation is %s", step, cid,
                                 x["provision_state"], res.provision_state)
                        touched = True
                    except NsiError as e:
                        log.warning("NSI %s of %s while reconciling: %s", step, cid, e.message)
                if x["active"] is not None and bool(x["active"]) != bool(nsi.get("active")):
                    a.detail = {**a.detail, "nsi": {**nsi, "active": bool(x["active"])}}
                    s.info.setdefault("data_plane_tenants", set()).add(res.tenant_id)
                    self._event(s, res, "dataPlaneStateChange", active=bool(x["active"]),
                                version=res.committed_version, versionConsistent=True, **child)
                    touched = changed = True
            self._count(s)
        return changed if touched else None

    # ---------------------------------------------------------------- queries
    def get(self, tenant_id: int | None, rid: str) -> tuple[Reservation, Tenant, list[dict]]:
        """A reservation, its tenant, and the resources each manager holds for it."""
        with self.db.reading() as s:
            res = s.scalar(select(Reservation).where(Reservation.id == rid))
            if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
                raise NotFound(f"no reservation {rid}")
            ctx = self._context(s, res, res.version)
            resources = [r for m in self._involved(res) for r in m.query(ctx)]
            return res, ctx.tenant, resources

    def list(self, tenant_id: int | None) -> builtins.list[tuple[Reservation, Tenant]]:
        with self.db.reading() as s:
            q = select(Reservation, Tenant).join(Tenant, Tenant.id == Reservation.tenant_id).order_by(
                Reservation.created_at)
            if tenant_id is not None:
                q = q.where(Reservation.tenant_id == tenant_id)
            out = [(r, t) for r, t in s.execute(q)]
            for r, _ in out:
                _ = r.criteria
        return out

    def events(self, tenant_id: int | None, rid: str) -> builtins.list[Event]:
        with self.db.reading() as s:
            res = s.get(Reservation, rid)
            if res is None or (tenant_id is not None and res.tenant_id != tenant_id):
                raise NotFound(f"no reservation {rid}")
            return list(s.scalars(select(Event).where(Event.reservation_id == rid).order_by(Event.id)))

    def feed(self, tenant_id: int | None, after: int, limit: int) -> builtins.list[Event]:
        """Events after the cursor ``after``, oldest first: every reservation's for the admin
        (``tenant_id`` None), only its own reservations' for a tenant."""
        with self.db.reading() as s:
            return tenant_events(s, tenant_id, after, limit)

    def desired_state(self, host: str) -> DesiredState:
        targets = self.sync.refresh(hosts=[host])  # that host's alone, not every host's
        if host not in targets:
            raise NotFound(f"no node or gateway named {host}")
        return targets[host].state

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
