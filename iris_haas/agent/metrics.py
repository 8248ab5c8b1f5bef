"""The agent's Prometheus metrics (``GET /metrics``), collected when scraped.

Each scrape reads the host (:mod:`iris_haas.hostd.stats`) for the objects of the desired state the
agent holds: it takes the reference to that state, never the reconcile lock, so a scrape waits for
no reconcile pass and a pass waits for no scrape. Labels are the names the coordinator gave (an
L1, a port, a tenant), so the number of series is bounded by what the host holds. The host is not
a label of each series: it is the target's (Prometheus adds ``instance``; ``iris_agent_info``
gives the host's name to join on). Every agent app has a registry of its own (several agents in
one process, as in the tests, do not collide).

============================================  =========================================
``iris_l1_cpu_seconds_total``                 an L1's cgroup CPU time (lxc, kvm)
``iris_l1_memory_bytes``                      its cgroup's memory now
``iris_port_{receive,transmit}_bytes_total``  an OVS port's or tunnel's counters, as the
``..._packets_total``, ``..._drop_total``     switch sees them (an L1 port's receive: the L1 sent)
``iris_tc_class_{bytes,drops}_total``         an htb class Iris made (an L1's egress limit,
                                              a tenant's limit on a gateway's uplink)
``iris_agent_info{host}``                     1, with the host's name
``iris_agent_desired_generation``             the generation of the desired state held
``iris_agent_scrape_errors_total``            sources a scrape could not read (OVSDB down)
``iris_agent_scrape_duration_seconds``        how long this scrape took (reading, building)
============================================  =========================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iris_haas.contract.ops import DesiredState, L1Op, PortOp, ShapeOp, TunnelLimitOp, TunnelOp
from iris_haas.hostd.stats import HostStats
from iris_haas.linux import tc

log = logging.getLogger("iris.agent.metrics")

PORT_LABELS = ["port", "kind", "tenant", "l1"]
DIRECTIONS = (("receive", "rx", "received"), ("transmit", "tx", "sent"))  # node_exporter's words


class AgentCollector(Collector):
    """``desired``: the agent's desired state as it holds it now (a reference, no lock taken);
    ``stats``: the host driver's reading of it."""

    def __init__(self, node: str, desired: Callable[[], DesiredState], stats: Callable[[DesiredState], HostStats]):
        self.node, self.desired, self.stats = node, desired, stats
        self.errors = 0
        self._lock = threading.Lock()  # scrapes may overlap (uvicorn runs each in a thread of its pool)

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        desired, host = self.desired(), self.node
        stats = self.stats(desired)
        if stats.errors:
            with self._lock:
                self.errors += len(stats.errors)
            log.warning("scrape: %s", "; ".join(stats.errors))
        l1s = [o for o in desired.ops if isinstance(o, L1Op)]
        l1_of_port = {o.port: o.name for o in l1s}

        cpu = CounterMetricFamily("iris_l1_cpu_seconds", "CPU time of the L1's cgroup", labels=["l1", "tenant", "kind"])
        mem = GaugeMetricFamily("iris_l1_memory_bytes", "memory of the L1's cgroup now", labels=["l1", "tenant", "kind"])
        for o in l1s:
            use = stats.l1s.get(o.name)
            if use is None:  # not made yet, or on its way out
                continue
            labels = [o.name, o.tenant, o.kind]
            if use.cpu_seconds is not None:
                cpu.add_metric(labels, use.cpu_seconds)
            if use.memory_bytes is not None:
                mem.add_metric(labels, use.memory_bytes)
        yield cpu
        yield mem

        counters = [(CounterMetricFamily(f"iris_port_{d}_{what}", f"{doc} by the OVS port or tunnel (an L1 port "
                                         "receives what its L1 sends)", labels=PORT_LABELS), f"{short}_{field}")
                    for d, short, done in DIRECTIONS
                    for what, field, doc in (("bytes", "bytes", f"bytes {done}"), ("packets", "packets", f"packets {done}"),
                                             ("drop", "dropped", f"packets dropped on {d}"))]
        ports: list[tuple[str, str, str]] = [
            (o.name, o.op, o.tenant) for o in desired.ops if isinstance(o, PortOp | TunnelOp)]
        ports += [(o.port, "port", o.tenant) for o in l1s]
        for name, kind, tenant in ports:
            c = stats.ports.get(name)
            if c is None:
                continue
            labels = [name, kind, tenant, l1_of_port.get(name, "")]
            for fam, attr in counters:
                fam.add_metric(labels, getattr(c, attr))
        yield from (fam for fam, _ in counters)

        tc_labels = ["device", "class", "tenant", "l1"]
        cls_bytes = CounterMetricFamily("iris_tc_class_bytes", "bytes an htb class sent", labels=tc_labels)
        cls_drops = CounterMetricFamily("iris_tc_class_drops", "packets an htb class dropped", labels=tc_labels)
        classes: list[tuple[str, int, str, str]] = [
            (o.port, tc.PORT_CLASS, o.tenant, l1_of_port.get(o.port, "")) for o in desired.ops if isinstance(o, ShapeOp)]
        classes += [(o.uplink, tc.tenant_class(o.remote_ip), o.tenant, "")
                    for o in desired.ops if isinstance(o, TunnelLimitOp)]
        for device, handle, tenant, l1 in classes:
            s = stats.classes.get((device, handle))
            if s is None:
                continue
            labels = [device, tc.handle(handle), tenant, l1]
            cls_bytes.add_metric(labels, s.bytes)
            cls_drops.add_metric(labels, s.drops)
        yield from (cls_bytes, cls_drops)

        info = GaugeMetricFamily("iris_agent_info", "this agent's host, as the coordinator names it", labels=["host"])
        info.add_metric([host], 1)
        yield info
        yield GaugeMetricFamily("iris_agent_desired_generation", "generation of the desired state this agent holds",
                                value=desired.version)
        yield CounterMetricFamily("iris_agent_scrape_errors", "sources a scrape could not read (OVSDB down, ...)",
                                  value=self.errors)
        yield GaugeMetricFamily("iris_agent_scrape_duration_seconds", "how long this scrape took to read the host "
                                "and build the series before this one", value=time.perf_counter() - t0)


def registry(collector: AgentCollector) -> CollectorRegistry:
    """A registry of the agent's own (never the process-wide one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
