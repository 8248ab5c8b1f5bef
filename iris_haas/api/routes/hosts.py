"""The hosts as the coordinator sees them: which generation of desired state each holds, and what
their L1s and ports use now (read from their agents' metrics when asked)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from iris_haas.api.deps import AdminDep, CoordinatorDep, PrincipalDep
from iris_haas.control.sync import DataPlane

hosts = APIRouter(prefix="/hosts", tags=["agents"])


class HostPublic(BaseModel):
    host: str
    generation: int  # of its desired state; only grows
    acked: int  # the newest generation the host confirmed holding
    in_sync: bool  # its agent found the host matching it
    last_seen: float | None
    error: str | None  # the last push failure, verbatim (admins only: it may name any tenant's objects)
    attempts: int


@hosts.get("", response_model=list[HostPublic], summary="Each host's generations, in-sync flag and last contact")
def list_hosts(coord: CoordinatorDep, _: AdminDep):
    coord.sync.refresh()  # the generations the database wants now, not as of the last change
    return [HostPublic(host=r.host, generation=r.generation, acked=r.acked, in_sync=r.in_sync,
                       last_seen=r.last_seen, error=r.error, attempts=r.attempts) for r in coord.sync.hosts()]


# ---------------------------------------------------------------- utilization, from the agents' metrics

L1_SERIES = {"iris_l1_cpu_seconds_total": "cpu_seconds", "iris_l1_memory_bytes": "memory_bytes"}
PORT_SERIES = {"iris_port_receive_bytes_total": "rx_bytes", "iris_port_transmit_bytes_total": "tx_bytes"}


class L1Use(BaseModel):
    host: str
    l1: str
    tenant: str
    kind: str
    cpu_seconds: float | None = None  # its cgroup's CPU time so far
    memory_bytes: float | None = None  # its cgroup's memory now


class PortUse(BaseModel):
    host: str
    port: str
    kind: str  # port, tunnel
    tenant: str
    l1: str  # the L1 whose NIC it is, or ""
    rx_bytes: float | None = None  # what the switch received on it (an L1 port: what the L1 sent)
    tx_bytes: float | None = None


class HostRead(BaseModel):
    host: str
    ok: bool
    error: str | None = None  # admins only


class Utilization(BaseModel):
    at: float  # when the agents were read (POSIX time): rates are differences between two answers
    l1s: list[L1Use]
    ports: list[PortUse]
    hosts: list[HostRead]  # the admin's: which agents answered


def _read(dataplane: DataPlane, host: str, url: str | None, tenant: str | None
          ) -> tuple[str, list[L1Use], list[PortUse], str | None]:
    try:
        text = dataplane.metrics(host, url)
        l1s: dict[str, L1Use] = {}
        ports: dict[str, PortUse] = {}
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                lb = smp.labels
                if tenant is not None and lb.get("tenant") != tenant:
                    continue
                if smp.name in L1_SERIES:
                    u = l1s.setdefault(lb["l1"], L1Use(host=host, l1=lb["l1"], tenant=lb["tenant"], kind=lb["kind"]))
                    setattr(u, L1_SERIES[smp.name], smp.value)
                elif smp.name in PORT_SERIES:
                    p = ports.setdefault(lb["port"], PortUse(host=host, port=lb["port"], kind=lb["kind"],
                                                             tenant=lb["tenant"], l1=lb["l1"]))
                    setattr(p, PORT_SERIES[smp.name], smp.value)
        return host, list(l1s.values()), list(ports.values()), None
    except Exception as e:  # noqa: BLE001 - one host that does not answer hides no other
        return host, [], [], f"{type(e).__name__}: {e}"


utilization_router = APIRouter(prefix="/utilization", tags=["agents"])


@utilization_router.get("", response_model=Utilization,
           summary="Each L1's CPU and memory and each port's bytes now, read from the agents' metrics")
def utilization(coord: CoordinatorDep, who: PrincipalDep):
    """Asks every agent (at once, each bounded in time) for its ``/metrics`` and keeps the L1s' and
    ports' series: the admin's are all of them, a tenant's only its own, from the hosts that hold
    something of it. Counters as the agents report them; the dashboard turns two answers into rates."""
    states = coord.desired_states()
    targets = {h: url for h, (url, st) in states.items()
               if who.admin or any(o.tenant == who.tenant_name for o in st.ops)}
    at = time.time()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        got = list(pool.map(lambda hu: _read(coord.sync.dataplane, hu[0], hu[1], None if who.admin else who.tenant_name),
                            sorted(targets.items())))
    return Utilization(at=at, l1s=[u for _, ls, _, _ in got for u in ls], ports=[p for _, _, ps, _ in got for p in ps],
                       hosts=[HostRead(host=h, ok=err is None, error=err) for h, _, _, err in got] if who.admin else [])
