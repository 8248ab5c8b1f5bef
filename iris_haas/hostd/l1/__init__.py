"""L1 drivers: one per kind of L1 node (:class:`~iris_haas.contract.types.L1Kind`); see :mod:`.base`."""

from __future__ import annotations

from pathlib import Path

from iris_haas.contract.types import L1Kind
from iris_haas.hostd.l1.base import L1Base, L1Driver, L1Failed
from iris_haas.hostd.l1.kvm import KvmL1
from iris_haas.hostd.l1.lxc import LxcL1
from iris_haas.hostd.l1.memory import MemoryL1
from iris_haas.hostd.l1.netns import NetnsL1
from iris_haas.linux.runner import Runner

DRIVERS: dict[L1Kind, type[L1Base]] = {L1Kind.NETNS: NetnsL1, L1Kind.LXC: LxcL1, L1Kind.KVM: KvmL1}


def make_drivers(state_dir: str | Path, runner: Runner | None = None, host_netns: str | None = None,
                 kinds: tuple[L1Kind, ...] = tuple(L1Kind)) -> dict[L1Kind, L1Driver]:
    """The real drivers of the given kinds, sharing one state directory."""
    return {k: DRIVERS[k](state_dir, runner, host_netns) for k in kinds}


__all__ = ["DRIVERS", "L1Base", "L1Driver", "L1Failed", "MemoryL1", "make_drivers"]
