"""In-memory twin of an L1 driver, for tests without root: records L1s and calls, runs nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.l1.base import L1Driver, L1Failed, spec_of


class MemoryL1(L1Driver):
    """The L1s of one kind, in memory. ``fail`` names L1s whose start fails."""

    def __init__(self, kind: L1Kind = L1Kind.NETNS, fail: Iterable[str] = ()):
        self.kind = kind
        self.nodes: dict[str, dict[str, Any]] = {}
        self.fail = set(fail)
        self.calls: list[tuple[str, str]] = []

    def list(self) -> dict[str, dict[str, Any]]:
        return {n: {"kind": self.kind, "spec": s, "running": True} for n, s in self.nodes.items()}

    def prepare(self, op: L1Op) -> None:
        self.calls.append(("prepare", op.name))

    def start(self, op: L1Op) -> None:
        self.calls.append(("start", op.name))
        if op.name in self.fail:
            raise L1Failed(f"{op.name}: start failed (twin told to fail)")
        self.nodes[op.name] = spec_of(op)

    def announce(self, op: L1Op) -> None:
        self.calls.append(("announce", op.name))

    def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        self.nodes.pop(name, None)
