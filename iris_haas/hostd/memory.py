"""In-memory twin of :class:`iris_haas.hostd.reconciler.Host`, for tests without root.

It holds the ops it was asked to apply as "what is on the host", answers the same questions
(``apply``, ``plan``, ``status``) and can be broken by hand (:meth:`MemoryHost.lose`) like a real
host, so API and agent tests exercise reconciliation without OVS or netlink.
"""

from __future__ import annotations

from iris_haas.contract.ops import DesiredState
from iris_haas.hostd.reconciler import Action


class MemoryHost:
    def __init__(self) -> None:
        self.objects: dict[tuple, dict] = {}

    def plan(self, desired: DesiredState) -> list[Action]:
        want = {o.ident(): o.model_dump() for o in desired.ops}
        acts = [Action("create", (str(k),)) for k, v in want.items() if self.objects.get(k) != v]
        acts += [Action("delete", (str(k),)) for k in self.objects if k not in want]
        return acts

    def apply(self, desired: DesiredState) -> list[Action]:
        acts = self.plan(desired)
        self.objects = {o.ident(): o.model_dump() for o in desired.ops}
        return acts

    def status(self, desired: DesiredState) -> tuple[list[dict], list[Action]]:
        return [dict(v) for v in self.objects.values()], self.plan(desired)

    def lose(self, op: str, name: str) -> None:
        """Simulate a change made by hand: the object disappears."""
        self.objects.pop((op, name), None)
