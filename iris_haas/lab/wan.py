"""The lab's WAN as the uPA's fabric: VLAN circuits across the "internet" switch, shaped by tc.

The internet switch is a Linux bridge joining the gateways' WAN ports; a circuit is a VLAN the
two gateways' frames carry across it, and its capacity is enforced on the switch, on the egress
of both its ports (so in each direction): each port has an htb root whose unclassified traffic
(the gateways' own underlay, other circuits' VLANs) is not shaped, and one class per circuit at
the circuit's rate, chosen by a classic-BPF filter on the frame's VLAN id.

This kernel has no VLAN devices, no bridge VLAN filtering, no flower, matchall or basic
classifier and no police or drop action; a cBPF program reading the frame's VLAN tag (the
kernel's ancillary ``vlan_tci``: a tagged frame is untagged into it on receive) is what it has to
tell VLANs apart. A tagged frame of no circuit is dropped at the switch: a last filter sends any
tagged frame the circuits' filters did not take to a class whose queue holds nothing (``pfifo
limit 0``), so a VLAN crosses the WAN only while a circuit holds it.

A circuit's filter has the VLAN as its preference and its class the VLAN as its minor: one VLAN
on one port is one circuit's, so both are unique by construction and name it to remove it.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass

import uvicorn

from iris_haas.lab import realizer
from iris_haas.lab.upa import UPA_PORT, WAN_MBPS, Circuit, Provider, lab_nsa, lab_ports
from iris_haas.linux import tc
from iris_haas.linux.runner import Runner, SubprocessRunner, cmd

# classic BPF (struct sock_filter: code jt jf k), SKF_AD_OFF = -0x1000
_LD_VLAN_TAG_PRESENT = "40 0 0 4294963248"  # ld [SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT]
_LD_VLAN_TAG = "40 0 0 4294963244"  # ld [SKF_AD_OFF + SKF_AD_VLAN_TAG]


def vlan_program(vlan: int) -> str:
    """tc's ``bytecode`` for: the frame carries VLAN ``vlan`` (any priority bits)."""
    insns = [_LD_VLAN_TAG_PRESENT, "21 4 0 0",  # no tag: reject
             _LD_VLAN_TAG, "84 0 0 4095",  # the VLAN id
             f"21 0 1 {vlan}", "6 0 0 4294967295", "6 0 0 0"]  # accept (the whole frame) or reject
    return f"{len(insns)}," + ",".join(insns)


def tagged_program() -> str:
    """tc's ``bytecode`` for: the frame carries a VLAN tag (any)."""
    insns = [_LD_VLAN_TAG_PRESENT, "21 1 0 0", "6 0 0 4294967295", "6 0 0 0"]  # no tag: reject, else accept
    return f"{len(insns)}," + ",".join(insns)


DROP_MINOR = 0xFFF  # not a VLAN: the class of tagged frames no circuit holds, whose queue holds none
DROP_PREF = 5000  # after every circuit's filter (their preference is their VLAN, 1-4094)


def burst_bytes(mbps: int) -> int:
    """A few ms at the rate (htb's default burst is too small at 100+ Mbit/s)."""
    return max(15_000, mbps * 1_000_000 // 8 // 250)


@dataclass
class Wan:
    netns: str  # the internet switch's namespace
    runner: Runner

    def _tc(self, *argv: object, ok: tuple[int, ...] = (0,)) -> str:
        return self.runner.run(cmd("tc", *argv, netns=self.netns, ok=ok))

    def _sealed(self, port: str) -> bool:
        return '"htb"' in self._tc("-j", "qdisc", "show", "dev", port, "root")

    def seal(self, port: str) -> None:
        """The port's htb root (unclassified frames, the gateways' best-effort underlay, pass
        unshaped) and its drop of every tagged frame no circuit holds. Idempotent."""
        if not self._sealed(port):
            self._tc("qdisc", "replace", "dev", port, "root", "handle", "1:", "htb", "default", "0")
        self._tc("class", "replace", "dev", port, "parent", "1:", "classid", f"1:{DROP_MINOR:x}", "htb",
                 "rate", "8bit", "ceil", "8bit")
        self._tc("qdisc", "replace", "dev", port, "parent", f"1:{DROP_MINOR:x}", "handle", f"{DROP_MINOR:x}:",
                 "pfifo", "limit", "0")
        self._tc("filter", "replace", "dev", port, "parent", "1:", "pref", DROP_PREF, "handle", 1, "bpf",
                 "bytecode", tagged_program(), "classid", f"1:{DROP_MINOR:x}")

    def up(self, c: Circuit) -> None:
        rate, burst = f"{c.mbps}mbit", burst_bytes(c.mbps)
        for port in (c.a.ifname, c.b.ifname):
            if not self._sealed(port):  # sealed when the provider started; again if its root went since
                self.seal(port)
            self._tc("class", "replace", "dev", port, "parent", "1:", "classid", f"1:{c.vlan:x}", "htb",
                     "rate", rate, "ceil", rate, "burst", burst, "cburst", burst)
            self._tc("filter", "replace", "dev", port, "parent", "1:", "pref", c.vlan, "handle", 1, "bpf",
                     "bytecode", vlan_program(c.vlan), "classid", f"1:{c.vlan:x}")

    def down(self, c: Circuit) -> None:
        for port in (c.a.ifname, c.b.ifname):
            # already gone (exit 2) is fine: down is idempotent
            self._tc("filter", "del", "dev", port, "parent", "1:", "pref", c.vlan, ok=(0, 2))
            self._tc("class", "del", "dev", port, "classid", f"1:{c.vlan:x}", ok=(0, 2))

    def circuits(self, ports: list[str]) -> dict[str, dict[int, float]]:
        """Per port: VLAN -> the rate (Mbit/s) its circuit is shaped at there."""
        out: dict[str, dict[int, float]] = {}
        for port in ports:
            rates = tc.htb_rates(self.netns, port)  # class handle (1:minor) -> Mbit/s
            filters = json.loads(self._tc("-j", "filter", "show", "dev", port, "parent", "1:") or "[]")
            out[port] = {}
            for f in filters:
                flowid = f.get("options", {}).get("flowid", "")
                handle = 0x10000 | int(flowid.partition(":")[2] or "0", 16)
                if f.get("kind") == "bpf" and flowid.startswith("1:") and handle in rates and f["pref"] != DROP_PREF:
                    out[port][int(f["pref"])] = rates[handle]
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m iris_haas.lab.wan --lab NAME``: the lab's uPA with this fabric, run by ``iris
    lab up`` inside the control network's namespace."""
    ap = argparse.ArgumentParser(prog="iris-upa")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--capacity-mbps", type=int, default=WAN_MBPS)
    ap.add_argument("--hold-s", type=float, default=60.0)
    args = ap.parse_args(argv)
    lab = realizer.from_run(args.lab)
    if lab is None:
        raise SystemExit(f"no lab {args.lab} is up")
    gateways = ["hgw", *(f"{x.tenant}gw" for x in lab.topo.iaas)]
    ports = lab_ports(lab.name, gateways, args.capacity_mbps)
    wan = Wan(lab.ns("inet"), SubprocessRunner())
    for p in ports:
        wan.seal(p.ifname)
    provider = Provider(lab_nsa(lab.name), ports, wan, hold_s=args.hold_s)
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(provider.app(), host=lab.topo.ctl_ip("ctl"), port=UPA_PORT, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
