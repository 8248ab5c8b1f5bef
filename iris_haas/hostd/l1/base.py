"""The L1 driver interface, and the base of the real drivers.

An L1 is what HaaS lends: a node that the tenant's IaaS adds as a host. The reconciler
(:mod:`iris_haas.hostd.reconciler`) wires its one NIC (the port op an :class:`~iris_haas.contract.ops.L1Op`
derives) and calls the L1's driver around that wiring:

1. :meth:`L1Driver.prepare` before the NIC is wired (a kvm L1 records its spec there, so one
   that fails half-way is still found and removed);
2. :meth:`L1Driver.start` after it (an lxc L1 joins the namespace that holds its NIC; a kvm L1
   boots on a tap in that namespace, wired to the NIC's end there);
3. :meth:`L1Driver.destroy` when the L1 is no longer wanted, before its NIC is unwired.

Every step is idempotent and every destroy tolerant, so the same desired state applied again
changes nothing, and an apply after a crash half-way finishes the job. Each driver records the
spec an L1 was made from (a JSON file in its state directory); :meth:`L1Driver.list` reports
every L1 it finds with that spec and whether it runs, so the reconciler can tell "there and
right" from "there but different" (recreate) from "there but not wanted" (destroy).
The drivers of each kind are listed in :mod:`iris_haas.hostd.l1`; the in-memory twin is
:class:`iris_haas.hostd.l1.memory.MemoryL1`.

Nothing an L1 driver creates gives the L1 a path to the control network: the only NIC is the
tenant's, and kvm guests get no user-mode network (``-nic none``, the tap only).
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any

from iris_haas.contract import names
from iris_haas.contract.errors import IrisError
from iris_haas.contract.ops import L1Op
from iris_haas.contract.types import L1Kind
from iris_haas.linux import garp, proc
from iris_haas.linux import netlink as nl
from iris_haas.linux import netns as ns
from iris_haas.linux.runner import Runner, SubprocessRunner, cmd


class L1Failed(IrisError):
    status, type = 500, "L1Failed"


# udhcpc's event script (busybox): the L1's own DHCP client configuring its own NIC
DHCP_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) busybox ip -4 addr flush dev "$interface" ;;
  bound|renew)
    busybox ip -4 addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && busybox ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""


def spec_of(op: L1Op) -> dict[str, Any]:
    """What an L1 was made from: everything but owner bookkeeping."""
    return op.model_dump(mode="json")


def matches(op: L1Op, info: dict[str, Any] | None) -> bool:
    """Whether an L1 as a driver lists it (``info``) is ``op``: same kind, same spec, running."""
    if not info:
        return False
    return info.get("kind") == op.kind and bool(info.get("running")) and info.get("spec") == spec_of(op)


def nic(op: L1Op) -> str:
    """The L1's end of its NIC (netns and lxc kinds: a veth end in the L1's namespace)."""
    return op.l1_ifname or names.l1_port(op.port)[1]


def stop_processes_in_netns(netns: str) -> None:
    """Destroying an L1 stops whatever runs on it (the IaaS's own software included), by PID."""
    for pid in ns.processes_in([netns]):
        proc.kill_pid(pid)


class L1Driver(abc.ABC):
    """What the reconciler drives: the L1s of one kind on one L0."""

    kind: L1Kind

    @abc.abstractmethod
    def list(self) -> dict[str, dict[str, Any]]:
        """name -> {kind, spec, running} for every L1 of this kind on this host."""

    @abc.abstractmethod
    def prepare(self, op: L1Op) -> None:
        """Before the NIC is wired."""

    @abc.abstractmethod
    def start(self, op: L1Op) -> None:
        """Make the L1 exist and run, on its wired NIC; idempotent. Records its spec last, so an
        L1 that failed half-way is seen as not matching and made again."""

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Stop and remove the L1 and everything it made; tolerant of any part being gone."""

    @abc.abstractmethod
    def announce(self, op: L1Op) -> None:
        """Tell the tenant's L2 where the L1's management address is, once the overlay's tunnels
        are up."""


class L1Base(L1Driver):
    """A real driver: ``state_dir`` is private to the driver (spec files, rootfs, pidfiles);
    ``host_netns`` is the L0's own namespace (None: the one this process runs in)."""

    def __init__(self, state_dir: str | Path, runner: Runner | None = None, host_netns: str | None = None):
        self.dir = Path(state_dir) / self.kind
        self.runner = runner or SubprocessRunner()
        self.host_netns = host_netns

    # ---- spec files
    def _spec_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _save_spec(self, op: L1Op) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._spec_path(op.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(spec_of(op)))
        os.replace(tmp, self._spec_path(op.name))

    def _load_spec(self, name: str) -> dict[str, Any] | None:
        try:
            spec: dict[str, Any] = json.loads(self._spec_path(name).read_text())
        except (OSError, ValueError):
            return None
        return spec

    def _drop_spec(self, name: str) -> None:
        try:
            self._spec_path(name).unlink()
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        try:
            return sorted(p.stem for p in self.dir.glob("*.json"))
        except OSError:
            return []

    def list(self) -> dict[str, dict[str, Any]]:
        return {n: {"kind": self.kind, "spec": self._load_spec(n), "running": self.running(n),
                    "keeps_disk": self.keeps_disk(n)} for n in self.names()}

    def keeps_disk(self, name: str) -> bool:
        """Whether the L1, stopped with its spec unchanged, is started again on its own disk (as
        a machine restarts) rather than made anew: only a kvm L1's disk is kept so far."""
        return False

    @abc.abstractmethod
    def running(self, name: str) -> bool: ...

    # ---- steps the kinds share
    def start_dhcp(self, op: L1Op) -> None:
        """No management address in the reservation: the L1 asks the IaaS side's DHCP server, as
        a host on the IaaS's management network would (busybox ``udhcpc`` in the L1's namespace,
        kept running to renew; it is stopped with everything else in the L1 at destroy)."""
        if op.address or not op.netns:
            return
        script = self.dir / "udhcpc.sh"
        if not script.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            script.write_text(DHCP_SCRIPT)
            script.chmod(0o755)
        self.runner.spawn(cmd("busybox", "udhcpc", "-f", "-i", nic(op), "-s", script, "-x", f"hostname:{op.name}",
                              netns=op.netns))

    def set_mac(self, op: L1Op) -> None:
        """The reservation's MAC (if any) on the L1's NIC (netns and lxc kinds: a veth end)."""
        if op.mac and op.netns and (nl.links(op.netns).get(nic(op)) or {}).get("address") != op.mac:
            nl.set_link(op.netns, nic(op), address=op.mac)

    def announce(self, op: L1Op) -> None:
        """A gratuitous ARP for the management address, so a neighbour that knew the address
        under another MAC (an earlier L1) does not wait for its ARP entry to time out."""
        if op.netns and op.address:
            garp.announce(op.netns, nic(op), op.address)
