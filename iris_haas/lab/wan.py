"""The lab's WAN as the uPA's fabric: VLAN circuits across the "internet" switch, policed.

The internet switch is a Linux bridge; the uPA turns its VLAN filtering on (untagged frames, the
gateways' own underlay, stay on the default VLAN 1 on every port) and realizes a circuit as its
VLAN allowed, tagged, on the two gateways' ports and nowhere else, with the circuit's capacity
policed on both ports' ingress (so in each direction) by a flower filter on that VLAN. A
circuit's filters have the VLAN as their preference: on one port a VLAN is one circuit's, so it
names the filter uniquely and takes it away again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from iris_haas.lab.upa import Circuit
from iris_haas.linux.runner import Runner, cmd


def burst_bytes(mbps: int) -> int:
    """About 5 ms at the rate, and at least a few full frames: a policer's bucket."""
    return max(mbps * 1_000_000 // 8 // 200, 64 * 1024)


@dataclass
class Wan:
    netns: str  # the internet switch's namespace
    bridge: str
    runner: Runner

    def _filtering(self) -> None:
        self.runner.run(cmd("ip", "link", "set", "dev", self.bridge, "type", "bridge", "vlan_filtering", "1",
                            netns=self.netns))

    def up(self, c: Circuit) -> None:
        self._filtering()
        for port in (c.a.ifname, c.b.ifname):
            self.runner.run(cmd("bridge", "vlan", "add", "dev", port, "vid", c.vlan, netns=self.netns))
            self.runner.run(cmd("tc", "qdisc", "replace", "dev", port, "clsact", netns=self.netns))
            self.runner.run(cmd("tc", "filter", "replace", "dev", port, "ingress", "protocol", "802.1Q", "pref", c.vlan,
                                "flower", "vlan_id", c.vlan, "action", "police", "rate", f"{c.mbps}mbit",
                                "burst", burst_bytes(c.mbps), "conform-exceed", "drop", netns=self.netns))

    def down(self, c: Circuit) -> None:
        for port in (c.a.ifname, c.b.ifname):
            # "not there" (exit 2) is fine: down is idempotent
            self.runner.run(cmd("tc", "filter", "del", "dev", port, "ingress", "pref", c.vlan, netns=self.netns,
                                ok=(0, 2)))
            self.runner.run(cmd("bridge", "vlan", "del", "dev", port, "vid", c.vlan, netns=self.netns, ok=(0, 255)))

    def circuits(self) -> dict[str, set[int]]:
        """The VLANs each port carries tagged (VLAN 1, the underlay's, left out)."""
        out = json.loads(self.runner.run(cmd("bridge", "-j", "vlan", "show", netns=self.netns)) or "[]")
        return {p["ifname"]: {v["vlan"] for v in p.get("vlans", []) if v["vlan"] != 1} for p in out}
