"""Each host's desired state, kept derived in memory and re-derived in proportion to the change.

A host's op list is the merge of the tenants' parts on it (:func:`iris_haas.planning.by_host`),
and a tenant's part depends on nothing but that tenant's active reservations and the inventory:
its bridge and mesh tunnels on a host follow every L1 and export of the tenant on every host,
its trunks and limits on a gateway follow its sites, and no tenant's part reads another's. So
:class:`DesiredCache` keeps, per tenant, its part of every host, keyed by the tenant's data-plane
count (``store.models.bump_data_plane``: moved in the transaction of each change, by whichever
coordinator made it), and the whole of it keyed by the inventory generation.

:meth:`DesiredCache.update` reads the counts, re-plans only the tenants whose count moved (one
query of their active allocations), and re-merges only the hosts where such a tenant's part
changed: the hosts of the reservation's L1s and volumes, the tenant's other mesh members, the
gateways. A host's digest is made of its tenants' part digests (each computed once, when its
tenant is planned), so re-merging a host costs a list concatenation, not a serialization of
every op on it; a host's generation is bumped only when that digest changes, so what the
incremental path leaves alone is what a full derivation would leave alone. An inventory
change, an empty cache (a start) or ``full=True`` derives everything from the database again;
the reconciler asks for that every so often, so a change the counts missed would be repaired,
and the hosts it repaired are logged.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from iris_haas import planning
from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import L1Op, Op
from iris_haas.managers.base import ActiveView, Fleet, Plans, ResourceManager
from iris_haas.store.models import DATA_PLANE_KEY, Meta

log = logging.getLogger("iris.desired")

# One tenant's ops on one host, in planning order; the identities of the objects they make (an
# L1's NIC too: see DesiredState's check), as a set that keeps their hashes, so the merge's
# check for collisions between tenants hashes nothing again; the SHA-256 of their canonical JSON.
HostPart = tuple[tuple[Op, ...], frozenset[tuple], str]
Part = dict[str, HostPart]  # host -> the tenant's part there


def op_json(op: Op) -> str:
    return json.dumps(op.model_dump(mode="json"), sort_keys=True)


def digest_of(jsons: Iterable[str]) -> str:
    """The digest of an op list from each op's canonical JSON (the SHA-256 of what
    ``json.dumps([...], sort_keys=True)`` gives for the list)."""
    return hashlib.sha256(("[" + ", ".join(jsons) + "]").encode()).hexdigest()


def host_digest(parts: Iterable[HostPart]) -> str:
    """A host's digest: of its tenants' part digests, in the merge's order."""
    return hashlib.sha256("".join(p[2] for p in parts).encode()).hexdigest()


class DesiredCache:
    """Every host's desired ops and their digest, per tenant part. Thread-safe; :meth:`update`
    runs inside the refresh's transaction, under the admission lock, so two coordinators never
    number two different states alike."""

    def __init__(self, managers: Sequence[ResourceManager]):
        self.managers = list(managers)
        self._lock = threading.RLock()
        self.inventory: int | None = None
        self.fleet: Fleet | None = None
        self.urls: dict[str, str | None] = {}
        self.counts: dict[int, int] = {}  # tenant -> the data-plane count its part was planned at
        self.parts: dict[int, Part] = {}
        self.on_host: dict[str, set[int]] = {}  # host -> the tenants with a part there
        # host -> its digest; its op list is put together from the parts when asked for (a
        # concatenation), so the cache holds each (host, op) pair once, in its tenant's part
        self.digests: dict[str, str] = {}
        # hosts re-merged whose digest host_sync may not hold yet (a refresh that failed after
        # the update): considered again by the next refresh
        self.pending: set[str] = set()
        self.stats = {"full": 0, "incremental": 0, "tenants_planned": 0, "hosts_merged": 0}

    # ---------------------------------------------------------------- reading
    def hosts(self) -> set[str]:
        with self._lock:
            return set(self.digests)

    def state(self, host: str) -> tuple[str | None, list[Op], str]:
        """The host's agent URL, ops and their digest."""
        with self._lock:
            d = self.digests[host]
            return self.urls.get(host), [op for t in sorted(self.on_host.get(host, ())) for op in self.parts[t][host][0]], d

    def hosts_of(self, tenant_ids: Iterable[int]) -> set[str]:
        """The hosts where these tenants have a part."""
        with self._lock:
            return {h for t in tenant_ids for h in self.parts.get(t, {})}

    def part(self, tenant_id: int) -> dict[str, list[Op]]:
        with self._lock:
            return {h: list(p[0]) for h, p in self.parts.get(tenant_id, {}).items()}

    def stored(self, hosts: Iterable[str]) -> None:
        """host_sync now holds these hosts' digests."""
        with self._lock:
            self.pending.difference_update(hosts)

    # ---------------------------------------------------------------- deriving
    def update(self, s: Session, full: bool = False) -> set[str]:
        """Catch up with the database; returns the hosts whose ops were derived again (every
        host on a full derivation). The counts are read before the allocations, so a change that
        commits meanwhile is at worst planned twice, never missed."""
        # Read before taking the cache's lock: the first statement is what waits for the
        # database's write lock (BEGIN IMMEDIATE on SQLite), and a thread that holds it may be
        # waiting for the cache's lock (``part``, inside a transaction of its own).
        inventory = s.scalar(select(Meta.value).where(Meta.key == "inventory"))
        counts = {int(k[len(DATA_PLANE_KEY):]): v for k, v in
                  s.execute(select(Meta.key, Meta.value).where(Meta.key.startswith(DATA_PLANE_KEY)))}
        with self._lock:
            try:
                if full or self.fleet is None or inventory != self.inventory:
                    return self._rebuild(s, inventory, counts)
                stale = {t for t, v in counts.items() if self.counts.get(t) != v} | (self.parts.keys() - counts.keys())
                return self._replan(s, stale, counts) if stale else set()
            except Exception:
                self.fleet = None  # half updated (a planning error): the next update derives everything
                raise

    def _plan(self, view: ActiveView) -> dict[int, Part]:
        plans: Plans = {}
        for m in self.managers:
            m.plan(view, plans)
        self.stats["tenants_planned"] += len(plans)
        out: dict[int, Part] = {}
        for tid, t in plans.items():
            # by id(op): the planner shares one op among the hosts that hold it, so each is
            # serialized once
            memo: dict[int, tuple[tuple[tuple, ...], str]] = {}
            part: Part = {}
            for host, ops in planning.by_host(t).items():
                keys: list[tuple] = []
                jsons = []
                for op in ops:
                    known = memo.get(id(op))
                    if known is None:
                        ident = (op.ident(), op.port_op().ident()) if isinstance(op, L1Op) else (op.ident(),)
                        known = memo[id(op)] = (ident, op_json(op))
                    keys += known[0]
                    jsons.append(known[1])
                unique = frozenset(keys)
                if len(unique) != len(keys):
                    self._conflict(host, [(tuple(ops), frozenset(), "")], keys)
                part[host] = (tuple(ops), unique, digest_of(jsons))
            out[tid] = part
        return out

    @staticmethod
    def _conflict(host: str, parts: list[HostPart], keys: Iterable[tuple] = ()) -> None:
        """Two ops for one object on one host: a planning bug, raised (names carry the tenant
        or the reservation, so no two tenants' decisions may name one object)."""
        seen: set[tuple] = set()
        for k in [*keys, *(k for p in parts for k in p[1])]:
            if k in seen:
                raise DataPlaneError(f"two ops for {k} on {host}")
            seen.add(k)

    def _merge(self, host: str) -> str:
        """The host's digest: of the tenants' parts in the order of their ids (one order,
        whichever path derived them; ``state`` concatenates the ops in that order). Each part is
        free of duplicates; between parts a collision is a conflict."""
        parts = [self.parts[t][host] for t in sorted(self.on_host.get(host, ()))]
        if len(parts) > 1:
            keys: set[tuple] = set()
            for p in parts:
                keys.update(p[1])
            if len(keys) != sum(len(p[1]) for p in parts):
                self._conflict(host, parts)
        self.stats["hosts_merged"] += 1
        return host_digest(parts)

    def _rebuild(self, s: Session, inventory: int | None, counts: dict[int, int]) -> set[str]:
        gc.unfreeze()  # what the last full derivation kept from the collector may be garbage now
        fleet = Fleet.load(s)
        parts = self._plan(ActiveView(s, fleet=fleet))
        on_host: dict[str, set[int]] = {}
        for tid, part in parts.items():
            for h in part:
                on_host.setdefault(h, set()).add(tid)
        before, same_inventory = self.digests, self.fleet is not None and inventory == self.inventory
        self.inventory, self.fleet, self.counts, self.parts, self.on_host = inventory, fleet, dict(counts), parts, on_host
        self.urls = {n.name: n.agent_url for n in fleet.nodes.values()} | {g.name: g.agent_url for g in fleet.gateways}
        self.digests = {h: self._merge(h) for h in sorted(set(self.urls) | set(on_host))}
        if same_inventory:
            drift = sorted(h for h, d in self.digests.items() if h in before and before[h] != d)
            if drift:
                log.warning("a full derivation changed the desired state of %d hosts the incremental path "
                            "had left: %s", len(drift), ", ".join(drift[:20]))
        self.stats["full"] += 1
        # The cache lives until the next full derivation: kept out of the collector's full
        # passes, which would otherwise walk every op of every host each time (a pause of a
        # tenth of a second or more in an API call, at 10,000 L1s). Until then, only objects
        # made since are collected; a cycle among the frozen ones waits for the next unfreeze.
        gc.freeze()
        self.pending |= set(self.digests)
        return set(self.digests)

    def _replan(self, s: Session, stale: set[int], counts: dict[int, int]) -> set[str]:
        parts = self._plan(ActiveView(s, tenant_ids=stale, fleet=self.fleet))
        changed: set[str] = set()
        for tid in stale:
            old, new = self.parts.pop(tid, {}), parts.get(tid, {})
            if new:
                self.parts[tid] = new
            for h in old.keys() - new.keys():
                self.on_host[h].discard(tid)
            for h in new:
                self.on_host.setdefault(h, set()).add(tid)
            changed |= {h for h in old.keys() | new.keys()
                        if (old[h][2] if h in old else None) != (new[h][2] if h in new else None)}
            if tid in counts:
                self.counts[tid] = counts[tid]
            else:
                self.counts.pop(tid, None)
        for h in changed:
            self.digests[h] = self._merge(h)
        self.stats["incremental"] += 1
        self.pending |= changed
        return changed
