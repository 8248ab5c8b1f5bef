"""In-memory twin of :class:`iris_haas.hostd.reconciler.Host`, for tests without root.

It holds the ops it was asked to apply as "what is on the host", answers the same questions
(``apply``, ``plan``, ``status``) and can be broken by hand (:meth:`MemoryHost.lose`) like a real
host, so API and agent tests exercise reconciliation without OVS or netlink. Its actions are its
own: an object made, an object removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iris_haas.contract.ops import DesiredState


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

    def close(self) -> None:
        """Nothing held."""

    def lose(self, op: str, name: str) -> None:
        """Simulate a change made by hand: the object disappears."""
        self.objects.pop((op, name), None)
