"""L1 drivers: one per kind of L1 node (``netns``, ``lxc``, ``kvm``); see :mod:`.base`."""

from iris_haas.hostd.l1.base import L1Driver, L1Failed, MemoryL1, make_drivers

__all__ = ["L1Driver", "L1Failed", "MemoryL1", "make_drivers"]
