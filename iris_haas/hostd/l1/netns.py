"""``netns`` L1: a network namespace and nothing else, for large lab runs.

The reconciler's port op creates the namespace and puts the L1's NIC (one end of a veth pair,
the other end on the tenant's bridge) inside it, with the management address. This driver adds
what is left of an L1: the default route (if the reservation gives a gateway) and the tenant's
SSH key, kept in the driver's state directory since a namespace has no file system of its own.
"""

from __future__ import annotations

import shutil

from iris_haas.contract import names
from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.hostd.l1.base import L1Base, L1Failed, stop_processes_in_netns
from iris_haas.linux import netlink as nl


class NetnsL1(L1Base):
    kind = L1Kind.NETNS

    def _ns(self, name: str) -> str | None:
        spec = self._load_spec(name) or {}
        return spec.get("netns")

    def running(self, name: str) -> bool:
        ns = self._ns(name)
        return ns is not None and nl.netns_exists(ns)

    def prepare(self, op: L1Op) -> None:
        """Nothing to make before the NIC: the NIC's port op makes the namespace and the veth."""

    def start(self, op: L1Op) -> None:
        if not op.netns:
            raise L1Failed(f"{op.name}: a {self.kind} L1 needs a namespace")
        if not nl.netns_exists(op.netns):
            raise L1Failed(f"{op.name}: namespace {op.netns} missing (its NIC was not wired)")
        self.set_mac(op)
        if op.gateway:
            nl.ensure_route(op.netns, "0.0.0.0/0", op.gateway)
        home = self.dir / op.name
        home.mkdir(parents=True, exist_ok=True)
        (home / "authorized_keys").write_text(op.ssh_key + ("\n" if op.ssh_key else ""))
        self.start_dhcp(op)
        self._save_spec(op)

    def destroy(self, name: str) -> None:
        ns = self._ns(name)
        if ns and ns.startswith(names.PREFIX):
            stop_processes_in_netns(ns)
            nl.delete_netns(ns)
        shutil.rmtree(self.dir / name, ignore_errors=True)
        self._drop_spec(name)
