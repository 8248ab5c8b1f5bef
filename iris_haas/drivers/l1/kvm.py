"""``kvm`` L1: a nested VM (placeholder until the QEMU driver lands)."""

from __future__ import annotations

from iris_haas.drivers.l1.base import L1Driver, L1Failed
from iris_haas.drivers.ops import L1Op


class KvmL1(L1Driver):
    kind = "kvm"

    def running(self, name: str) -> bool:
        return False

    def start(self, op: L1Op) -> None:
        raise L1Failed("kvm L1s are not available yet")

    def destroy(self, name: str) -> None:
        self._drop_spec(name)
