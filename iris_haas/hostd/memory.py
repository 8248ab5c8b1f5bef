"""In-memory twin of :class:`iris_haas.hostd.reconciler.Host`, for tests without root.

It holds the ops it was asked to apply as "what is on the host", answers the same questions
(``apply``, ``plan``, ``status``) and can be broken by hand (:meth:`MemoryHost.lose`) like a real
host, so API and agent tests exercise reconciliation without OVS or netlink. Its actions are its
own: an object made, an object removed. Its counters (:meth:`MemoryHost.stats`) are those a
test gave it (:meth:`MemoryHost.count`, :meth:`MemoryHost.use`): a host where nothing ran and
nothing flowed reports zeros for every object it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iris_haas.contract.ops import DesiredState, L1Op
from iris_haas.hostd.stats import HostStats, PortCounters, port_names
from iris_haas.linux.cgroup import Usage
from iris_haas.linux.tc import PORT_CLASS, ClassStats


@dataclass(frozen=True)
class Create:
    ident: tuple[Any, ...]
    spec: dict[str, Any] = field(hash=False, compare=False)

    def apply(self, host: MemoryHost) -> None:
        host.objects[self.ident] = self.spec

    def __str__(self) -> str:
        return f"create {self.ident}"


@dataclass(frozen=True)
class Delete:
    ident: tuple[Any, ...]

    def apply(self, host: MemoryHost) -> None:
        host.objects.pop(self.ident, None)

    def __str__(self) -> str:
        return f"delete {self.ident}"


class MemoryHost:
    def __init__(self) -> None:
        self.objects: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.counters: dict[str, PortCounters] = {}
        self.usage: dict[str, Usage] = {}

    def plan(self, desired: DesiredState) -> list[Create | Delete]:
        want = {o.ident(): o.model_dump() for o in desired.ops}
        acts: list[Create | Delete] = [Create(k, v) for k, v in want.items() if self.objects.get(k) != v]
        acts += [Delete(k) for k in self.objects if k not in want]
        return acts

    def apply(self, desired: DesiredState) -> list[Create | Delete]:
        acts = self.plan(desired)
        for a in acts:
            a.apply(self)
        return acts

    def status(self, desired: DesiredState) -> tuple[list[dict[str, Any]], list[Create | Delete]]:
        return [dict(v) for v in self.objects.values()], self.plan(desired)

    def stats(self, desired: DesiredState) -> HostStats:
        """The counters of the objects of ``desired`` this host holds."""
        out = HostStats()
        held = [o for o in desired.ops if o.ident() in self.objects]
        for name in port_names(held):
            out.ports[name] = self.counters.get(name, PortCounters())
        for o in held:
            if isinstance(o, L1Op):
                out.l1s[o.name] = self.usage.get(o.name, Usage(0.0, 0))
            elif o.op == "shape":
                c = self.counters.get(o.port, PortCounters())
                out.classes[(o.port, PORT_CLASS)] = ClassStats(c.rx_bytes, c.rx_packets, 0)
        return out

    def count(self, port: str, **counters: int) -> None:
        """Traffic on a port: add to its counters (``rx_bytes=``, ``tx_packets=``, ...)."""
        have = self.counters.get(port, PortCounters())
        self.counters[port] = PortCounters(**{k: getattr(have, k) + counters.get(k, 0) for k in vars(have)})

    def use(self, l1: str, cpu_seconds: float, memory_bytes: int) -> None:
        """What an L1 has used so far."""
        self.usage[l1] = Usage(cpu_seconds, memory_bytes)

    def close(self) -> None:
        """Nothing held."""

    def lose(self, op: str, name: str) -> None:
        """Simulate a change made by hand: the object disappears."""
        self.objects.pop((op, name), None)
