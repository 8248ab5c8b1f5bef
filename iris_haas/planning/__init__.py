"""Planning: from plain inputs (:mod:`iris_haas.planning.model`) to the ops each host must hold.

Pure functions, no database and no host: the coordinator's managers and the lab call the same
ones. :func:`desired` merges the network, compute and storage decisions of every tenant into one
op list per host.
"""

from __future__ import annotations

from collections.abc import Iterable

from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import Op, circuit_ends
from iris_haas.planning import compute, network, storage
from iris_haas.planning.model import (
    L0,
    L1,
    HaasGateway,
    IaasSite,
    Router,
    Segment,
    Tenant,
    Volume,
    router_interface,
)

__all__ = ["L0", "L1", "HaasGateway", "IaasSite", "Router", "Segment", "Tenant", "Volume", "by_host", "circuit_ends",
           "desired", "plan_tenant", "put", "router_interface"]


def plan_tenant(t: Tenant) -> list[tuple[str, Op]]:
    """Every (host, op) the tenant's data plane needs, network first."""
    return [*network.plan(t), *compute.plan(t), *storage.plan(t)]


def put(ops: dict[tuple, Op], host: str, op: Op, ident: tuple | None = None) -> None:
    """Add ``op`` to a host's ops by identity. Two tenants' decisions never name one object (names
    carry the tenant or the reservation), so two different ops for one object on one host are a
    planning bug: raised, never merged."""
    key = op.ident() if ident is None else ident
    have = ops.get(key)
    if have is None:
        ops[key] = op
    elif have != op:
        raise DataPlaneError(f"two different ops for {key} on {host}: {have} and {op}")


def by_host(t: Tenant) -> dict[str, list[Op]]:
    """One tenant's part of each host's op list: what the coordinator keeps per tenant, so that a
    change of one tenant re-plans that tenant alone."""
    per_host: dict[str, dict[tuple, Op]] = {}
    idents: dict[int, tuple] = {}  # by id(op): the planner gives one op to many hosts
    for host, op in plan_tenant(t):
        key = idents.get(id(op))
        if key is None:
            key = idents[id(op)] = op.ident()
        put(per_host.setdefault(host, {}), host, op, key)
    return {h: list(ops.values()) for h, ops in per_host.items()}


def desired(tenants: Iterable[Tenant], hosts: Iterable[str] = ()) -> dict[str, list[Op]]:
    """Each host's op list; ``hosts`` are listed even when they hold nothing (so they are emptied)."""
    per_host: dict[str, dict[tuple, Op]] = {h: {} for h in hosts}
    for t in tenants:
        for host, op in plan_tenant(t):
            put(per_host.setdefault(host, {}), host, op)
    return {h: list(ops.values()) for h, ops in per_host.items()}
