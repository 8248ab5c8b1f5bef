"""The lab as data: a TOML topology file, and its expansion into namespaces, links and switches.

:class:`Topology` is what the file says (see ``default.toml``). :func:`expand` turns it into a
:class:`LabPlan`, a flat list of plain elements (namespaces, veth pairs, Linux bridges, OVS
instances with their bridges, addresses, agents) that :mod:`iris_haas.lab.realizer` creates. No
side effects here, so a test can read the whole lab without root.

Node names inside the lab (each a namespace ``iris-<lab>-<node>``):

=============  ===============================================================================
``inet``       the "internet": a Linux bridge joining the gateways' uplinks (198.18.0.0/24)
``fab``        the HaaS data fabric: a Linux bridge joining the L0s' and the gateway's underlay
``ctl``        the HaaS control network: a Linux bridge; the coordinator's seat is 198.19.0.1
``hgw``        the HaaS gateway: OVS (``br-phy`` on the internet, ``br-fab`` on the fabric)
``l0-<i>``     an L0 node: OVS (``br-phy`` on the fabric), a control NIC, an ``iris agent``
``<t>gw``      tenant t's IaaS gateway: OVS (``br-phy`` uplink, ``br-int`` = the paper's figure 5)
``<t>tor``     tenant t's top-of-rack switch: OVS, trunk to the gateway, access ports
``<t>mgmt``    tenant t's management server, on the management VLAN (101)
``<t>pub``     tenant t's public host, on the public VLAN (102)
=============  ===============================================================================

Interface names inside a namespace are short and local (``up``, ``fab``, ``ctl``); the
namespace carries the Iris prefix. Underlay links get ``underlay_mtu`` so a full 1500-byte tenant
frame fits with its GRE and 802.1Q headers.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from iris_haas.contract import names

DEFAULT_FILE = Path(__file__).with_name("default.toml")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Internet(_M):
    subnet: str = "198.18.0.0/24"


class Haas(_M):
    gateway_ip: str = "198.18.0.1"
    fabric: str = "198.18.1.0/24"
    control: str = "198.19.0.0/24"
    l0_count: int = Field(default=4, ge=1, le=200)
    agent_port: int = 7780


class Iaas(_M):
    tenant: str = Field(pattern=r"^[a-z][a-z0-9]{0,5}$")
    key: int = Field(ge=1, le=2**32 - 1)
    gateway_ip: str
    mgmt_vlan: int = 101
    public_vlan: int = 102
    mgmt_host: str = "10.0.101.10/24"
    public_host: str = "10.0.102.10/24"


class Topology(_M):
    name: str = Field(default="iris", pattern=r"^[a-z0-9][a-z0-9-]{0,11}$")
    datapath_type: str = "netdev"
    underlay_mtu: int = 1600
    internet: Internet = Internet()
    haas: Haas = Haas()
    iaas: list[Iaas] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None = None, **override) -> Topology:
        data = tomllib.loads(Path(path or DEFAULT_FILE).read_text())
        data.update({k: v for k, v in override.items() if v is not None and k != "l0_count"})
        if override.get("l0_count"):
            data.setdefault("haas", {})["l0_count"] = override["l0_count"]
        return cls.model_validate(data)

    # addresses ------------------------------------------------------------
    def _net(self, cidr: str) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(cidr)

    def ctl_ip(self, node: str) -> str:
        net = self._net(self.haas.control)
        if node == "ctl":
            return str(net[1])
        if node == "hgw":
            return str(net[2])
        return str(net[10 + l0_index(node)])

    def fab_ip(self, node: str) -> str:
        net = self._net(self.haas.fabric)
        return str(net[1]) if node == "hgw" else str(net[10 + l0_index(node)])

    def l0_nodes(self) -> list[str]:
        return [f"l0-{i}" for i in range(1, self.haas.l0_count + 1)]

    def ns(self, node: str) -> str:
        return names.lab_netns(self.name, node)

    def tenant(self, t: str) -> Iaas:
        for x in self.iaas:
            if x.tenant == t:
                return x
        raise KeyError(t)


def l0_index(node: str) -> int:
    return int(node.split("-")[1])


# ---------------------------------------------------------------- expansion

@dataclass
class Veth:
    a_ns: str
    a: str
    b_ns: str
    b: str
    mtu: int = 1500


@dataclass
class LinuxBridge:
    ns: str
    name: str
    ports: list[str]
    addr: str | None = None
    mtu: int = 1500


@dataclass
class OvsPort:
    name: str
    tag: int | None = None
    vlan_mode: str | None = None
    type: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class OvsBridge:
    name: str
    ports: list[OvsPort]
    addr: str | None = None  # on the bridge's internal port (where a tunnel's underlay IP must be)
    mtu: int | None = None


@dataclass
class OvsNode:
    ns: str
    node: str
    bridges: list[OvsBridge]


@dataclass
class Host:
    """An end host (a namespace with one NIC and an address): the IaaS's servers."""

    ns: str
    ifname: str
    addr: str


@dataclass
class Agent:
    ns: str
    node: str
    ip: str
    port: int


@dataclass
class LabPlan:
    topo: Topology
    namespaces: list[str]
    veths: list[Veth]
    linux_bridges: list[LinuxBridge]
    ovs: list[OvsNode]
    hosts: list[Host]
    addrs: list[tuple[str, str, str]]  # (ns, ifname, cidr)
    agents: list[Agent]


def _cidr(ip: str, net: str) -> str:
    return f"{ip}/{ipaddress.ip_network(net).prefixlen}"


def expand(t: Topology) -> LabPlan:
    ns = t.ns
    mtu = t.underlay_mtu
    nss: list[str] = []
    veths: list[Veth] = []
    lbs: list[LinuxBridge] = []
    ovsn: list[OvsNode] = []
    hosts: list[Host] = []
    addrs: list[tuple[str, str, str]] = []
    agents: list[Agent] = []

    for sw in ("inet", "fab", "ctl"):
        nss.append(ns(sw))
    inet_ports, fab_ports, ctl_ports = [], [], []

    # HaaS gateway
    nss.append(ns("hgw"))
    veths.append(Veth(ns("hgw"), "up", ns("inet"), "hgw", mtu))
    inet_ports.append("hgw")
    veths.append(Veth(ns("hgw"), "fab", ns("fab"), "hgw", mtu))
    fab_ports.append("hgw")
    veths.append(Veth(ns("hgw"), "ctl", ns("ctl"), "hgw"))
    ctl_ports.append("hgw")
    addrs.append((ns("hgw"), "ctl", _cidr(t.ctl_ip("hgw"), t.haas.control)))
    ovsn.append(OvsNode(ns("hgw"), "hgw", [
        OvsBridge("br-phy", [OvsPort("up")], _cidr(t.haas.gateway_ip, t.internet.subnet), mtu),
        OvsBridge("br-fab", [OvsPort("fab")], _cidr(t.fab_ip("hgw"), t.haas.fabric), mtu),
    ]))
    agents.append(Agent(ns("hgw"), "hgw", t.ctl_ip("hgw"), t.haas.agent_port))

    # L0 nodes
    for node in t.l0_nodes():
        i = l0_index(node)
        nss.append(ns(node))
        veths.append(Veth(ns(node), "fab", ns("fab"), f"l0-{i}", mtu))
        fab_ports.append(f"l0-{i}")
        veths.append(Veth(ns(node), "ctl", ns("ctl"), f"l0-{i}"))
        ctl_ports.append(f"l0-{i}")
        addrs.append((ns(node), "ctl", _cidr(t.ctl_ip(node), t.haas.control)))
        ovsn.append(OvsNode(ns(node), node, [
            OvsBridge("br-phy", [OvsPort("fab")], _cidr(t.fab_ip(node), t.haas.fabric), mtu),
        ]))
        agents.append(Agent(ns(node), node, t.ctl_ip(node), t.haas.agent_port))

    # IaaS data centers: built once, never touched by provisioning
    for x in t.iaas:
        gw, tor, mg, pb = (f"{x.tenant}gw", f"{x.tenant}tor", f"{x.tenant}mgmt", f"{x.tenant}pub")
        nss += [ns(gw), ns(tor), ns(mg), ns(pb)]
        veths.append(Veth(ns(gw), "up", ns("inet"), gw, mtu))
        inet_ports.append(gw)
        veths.append(Veth(ns(gw), "tor", ns(tor), "gw"))
        veths.append(Veth(ns(tor), "mgmt", ns(mg), "eth0"))
        veths.append(Veth(ns(tor), "pub", ns(pb), "eth0"))
        # the gateway's tenant-facing bridge (paper figure 5) is gateway-config's job; see gateway.py
        ovsn.append(OvsNode(ns(gw), gw, [
            OvsBridge("br-phy", [OvsPort("up")], _cidr(x.gateway_ip, t.internet.subnet), mtu),
        ]))
        ovsn.append(OvsNode(ns(tor), tor, [
            OvsBridge("tor", [OvsPort("gw", vlan_mode="trunk"),
                              OvsPort("mgmt", tag=x.mgmt_vlan, vlan_mode="access"),
                              OvsPort("pub", tag=x.public_vlan, vlan_mode="access")]),
        ]))
        hosts.append(Host(ns(mg), "eth0", x.mgmt_host))
        hosts.append(Host(ns(pb), "eth0", x.public_host))

    lbs.append(LinuxBridge(ns("inet"), "inet", inet_ports, None, mtu))
    lbs.append(LinuxBridge(ns("fab"), "fab", fab_ports, None, mtu))
    lbs.append(LinuxBridge(ns("ctl"), "ctl", ctl_ports, _cidr(t.ctl_ip("ctl"), t.haas.control)))
    # no node routes: the switches are bridges, the gateways tunnel (only model (c) adds a router)
    return LabPlan(t, nss, veths, lbs, ovsn, hosts, addrs, agents)
