"""The agent's Prometheus metrics (``GET /metrics``), collected when scraped.

Each scrape reads the host (:mod:`iris_haas.hostd.stats`) for the objects of the desired state the
agent holds: it takes the reference to that state, never the reconcile lock, so a scrape waits for
no reconcile pass and a pass waits for no scrape. Labels are the names the coordinator gave (an
L1, a port, a tenant), so the number of series is bounded by what the host holds. The host is not
a label of each series: it is the target's (Prometheus adds ``instance``; ``iris_agent_info``
gives the host's name to join on). Every agent app has a registry of its own (several agents in
one process, as in the tests, do not collide).

The text is written by :class:`Exposition`, not by prometheus_client's ``generate_latest``: the
same bytes, but the name and labels of each series, escaped and sorted, are kept from one scrape
to the next (only those the last scrape wrote, so no more than the host holds), and a scrape
formats only the values. With 1,000 L1s (~8,000 series) that formatting was four fifths of a
scrape's ~50 ms of CPU (measured with bench/metrics.py); nothing read from the host is kept.

=============================================  ========================================
``iris_l1_cpu_seconds_total``                 an L1's cgroup CPU time (lxc, kvm)
``iris_l1_memory_bytes``                      its cgroup's memory now
``iris_port_{receive,transmit}_bytes_total``  an OVS port's or tunnel's counters, as the
``..._packets_total``, ``..._drop_total``     switch sees them (an L1 port's receive: the L1 sent)
``iris_tc_class_{bytes,drops}_total``         an htb class Iris made (an L1's egress limit,
                                              a tenant's limit on a gateway's uplink)
``iris_export_{receive,transmit}_bytes_total`` an export's bytes, on its server's NIC
``iris_agent_info{host}``                     1, with the host's name
``iris_agent_desired_generation``             the generation of the desired state held
``iris_agent_scrape_errors_total``            sources a scrape could not read (OVSDB down)
``iris_agent_scrape_duration_seconds``        how long this scrape took (reading, building)
=============================================  ========================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from iris_haas.contract.ops import DesiredState, L1Op, PortOp, ShapeOp, TunnelLimitOp, TunnelOp, VolumeOp
from iris_haas.hostd.stats import HostStats
from iris_haas.linux import tc

log = logging.getLogger("iris.agent.metrics")

PORT_LABELS = ("port", "kind", "tenant", "l1")
DIRECTIONS = (("receive", "rx", "received"), ("transmit", "tx", "sent"))  # node_exporter's words


@dataclass
class Family:
    """One metric family as the agent builds it: its series as (label values, value) rows."""

    name: str  # without a counter's ``_total``
    type: str  # "counter" or "gauge"
    doc: str
    labels: tuple[str, ...] = ()
    rows: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def metric(self) -> Metric:
        cls = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        m = cls(self.name, self.doc, labels=list(self.labels))
        for values, v in self.rows:
            m.add_metric(list(values), v)
        return m


def _one(name: str, kind: str, doc: str, v: float) -> Family:
    return Family(name, kind, doc, rows=[((), v)])


class AgentCollector(Collector):
    """``desired``: the agent's desired state as it holds it now (a reference, no lock taken);
    ``stats``: the host driver's reading of it. :meth:`families` reads the host once and builds
    every series; :meth:`collect` gives them to prometheus_client, :class:`Exposition` writes them."""

    def __init__(self, node: str, desired: Callable[[], DesiredState], stats: Callable[[DesiredState], HostStats],
                 clock: Callable[[], float] = time.perf_counter):
        self.node, self.desired, self.stats, self.clock = node, desired, stats, clock
        self.errors = 0
        self._lock = threading.Lock()  # scrapes may overlap (uvicorn runs each in a thread of its pool)

    def collect(self) -> Iterator[Metric]:
        return (f.metric() for f in self.families())

    def families(self) -> list[Family]:
        t0 = self.clock()
        desired, host = self.desired(), self.node
        stats = self.stats(desired)
        if stats.errors:
            with self._lock:
                self.errors += len(stats.errors)
            log.warning("scrape: %s", "; ".join(stats.errors))
        l1s = [o for o in desired.ops if isinstance(o, L1Op)]
        l1_of_port = {o.port: o.name for o in l1s}

        l1_labels = ("l1", "tenant", "kind")
        cpu = Family("iris_l1_cpu_seconds", "counter", "CPU time of the L1's cgroup", l1_labels)
        mem = Family("iris_l1_memory_bytes", "gauge", "memory of the L1's cgroup now", l1_labels)
        for o in l1s:
            use = stats.l1s.get(o.name)
            if use is None:  # not made yet, or on its way out
                continue
            labels = (o.name, o.tenant, o.kind)
            if use.cpu_seconds is not None:
                cpu.rows.append((labels, use.cpu_seconds))
            if use.memory_bytes is not None:
                mem.rows.append((labels, use.memory_bytes))
        out = [cpu, mem]

        counters = [(Family(f"iris_port_{d}_{what}", "counter", f"{doc} by the OVS port or tunnel (an L1 port "
                            "receives what its L1 sends)", PORT_LABELS), f"{short}_{field}")
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
            labels = (name, kind, tenant, l1_of_port.get(name, ""))
            for fam, attr in counters:
                fam.rows.append((labels, getattr(c, attr)))
        out += [fam for fam, _ in counters]

        tc_labels = ("device", "class", "tenant", "l1")
        cls_bytes = Family("iris_tc_class_bytes", "counter", "bytes an htb class sent", tc_labels)
        cls_drops = Family("iris_tc_class_drops", "counter", "packets an htb class dropped", tc_labels)
        classes: list[tuple[str, int, str, str]] = [
            (o.port, tc.PORT_CLASS, o.tenant, l1_of_port.get(o.port, "")) for o in desired.ops if isinstance(o, ShapeOp)]
        classes += [(o.uplink, tc.tenant_class(o.remote_ip), o.tenant, "")
                    for o in desired.ops if isinstance(o, TunnelLimitOp)]
        for device, handle, tenant, l1 in classes:
            s = stats.classes.get((device, handle))
            if s is None:
                continue
            labels = (device, tc.handle(handle), tenant, l1)
            cls_bytes.rows.append((labels, s.bytes))
            cls_drops.rows.append((labels, s.drops))
        out += [cls_bytes, cls_drops]

        vol_labels = ("volume", "tenant")
        exports = [Family(f"iris_export_{d}_bytes", "counter", f"bytes the export's server {done} on its NIC",
                          vol_labels) for d, _, done in DIRECTIONS]
        for v in (o for o in desired.ops if isinstance(o, VolumeOp)):
            b = stats.exports.get(v.name)
            if b is not None:
                for fam, n in zip(exports, b, strict=True):
                    fam.rows.append(((v.name, v.tenant), n))
        out += exports

        out.append(Family("iris_agent_info", "gauge", "this agent's host, as the coordinator names it", ("host",),
                          [((host,), 1)]))
        out.append(_one("iris_agent_desired_generation", "gauge", "generation of the desired state this agent holds",
                        desired.version))
        out.append(_one("iris_agent_scrape_errors", "counter", "sources a scrape could not read (OVSDB down, ...)",
                        self.errors))
        out.append(_one("iris_agent_scrape_duration_seconds", "gauge", "how long this scrape took to read the host "
                        "and build the series before this one", self.clock() - t0))
        return out


def registry(collector: AgentCollector) -> CollectorRegistry:
    """A registry of the agent's own (never the process-wide one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _head(name: str, labels: Sequence[str], values: Sequence[str]) -> str:
    """A series' line up to its value, escaped and its labels sorted as ``generate_latest`` does."""
    if not labels:
        return f"{openmetrics.escape_metric_name(name)} "
    inner = ",".join(f'{openmetrics.escape_label_name(k)}="{openmetrics._escape(v, openmetrics.ALLOWUTF8, False)}"'
                     for k, v in sorted(zip(labels, values, strict=True)))
    return f"{openmetrics.escape_metric_name(name)}{{{inner}}} "


class Exposition:
    """The Prometheus text format of the collector's series, byte for byte what
    ``generate_latest`` writes of its registry (a unit test compares them). What each series'
    line starts with (its name and labels, escaped and sorted) is kept between scrapes: only the
    series the last scrape wrote, so never more than the host holds."""

    def __init__(self, collector: AgentCollector):
        self.collector = collector
        self._heads: dict[tuple[str, tuple[str, ...]], str] = {}
        self._lock = threading.Lock()  # scrapes may overlap: each swaps in the heads it used

    def render(self) -> bytes:
        known = self._heads
        used: dict[tuple[str, tuple[str, ...]], str] = {}
        out: list[str] = []
        for fam in self.collector.families():
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            escaped = openmetrics.escape_metric_name(name)
            out.append(f"# HELP {escaped} {_help(fam.doc)}\n# TYPE {escaped} {fam.type}\n")
            for values, v in fam.rows:
                key = (name, values)
                head = known.get(key)
                if head is None:
                    head = _head(name, fam.labels, values)
                used[key] = head
                out.append(f"{head}{floatToGoString(v)}\n")
        with self._lock:
            self._heads = used
        return "".join(out).encode()
