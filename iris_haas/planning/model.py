"""The planning layer's inputs: what the data plane of one tenant is made of, as plain data.

The managers build these from the database (the committed allocations of the reservations whose
data plane is active); the lab builds them from its topology. Both then call the same planning
functions (:func:`iris_haas.planning.desired`), so there is one decision path from "what is
reserved" to "which ops each host holds".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from iris_haas.contract import names
from iris_haas.contract.types import L1Kind


@dataclass(frozen=True)
class Segment:
    """An L2 segment of the HaaS DC extended to a tenant's IaaS: its bridge on every host that
    holds a part of it, and the GRE key of its mesh and of its trunk to the IaaS gateway."""

    name: str  # names its tunnels
    bridge: str
    key: int
    routed: bool = False  # model c: not extended to the IaaS; a router joins it to the tenant's L2

    @classmethod
    def of(cls, name: str, key: int, routed: bool = False) -> Segment:
        return cls(name, names.segment_bridge(name), key, routed)


@dataclass(frozen=True)
class L0:
    """A host of the HaaS DC that holds parts of segments (L1s, volume exports)."""

    id: int  # orders the mesh and names the tunnels to it (n<id>)
    host: str  # the host's name: its agent is sent the ops
    underlay: str | None  # where the other members' mesh tunnels to it end; None: no tunnel can


@dataclass(frozen=True)
class HaasGateway:
    id: int  # names the L0s' tunnels to it (g<id>)
    host: str
    uplink: str  # its NIC towards the internet: the per-tenant limits sit there
    fabric: str  # where the L0s' mesh tunnels to it end


@dataclass(frozen=True)
class IaasSite:
    """One of the tenant's IaaS data centers: its gateway ends the tenant's inter-DC trunk.

    With ``nsi`` the site is reached through NSI circuits only (the tenant's bandwidth to it comes
    from an NSI provider): the trunk runs inside ``circuit_vlan``'s circuit while the provider
    has it up, and there is no trunk at all otherwise (no best-effort path)."""

    id: int  # names the trunk (x<id>)
    gateway: str  # the IaaS gateway's underlay address
    rate_mbit: float = 0  # the tenant's limit on the inter-DC tunnel towards it; 0: none
    nsi: bool = False
    circuit_vlan: int | None = None  # the VLAN of the NSI circuit the trunk runs in (its data plane up)


@dataclass(frozen=True)
class L1:
    """An L1 node on an L0, with one NIC on its segment: ``vlan`` native and, with ``trunk``, every
    other VLAN tagged (an IaaS KVM host's NIC); without ``trunk`` an access port on ``vlan``."""

    name: str
    l0: L0
    segment: Segment
    owner: str
    tenant: str
    kind: L1Kind = L1Kind.NETNS
    netns: str | None = None  # default: the L1's name
    vlan: int | None = None
    trunk: bool = True
    address: str | None = None
    gateway: str | None = None
    mac: str | None = None
    cpus: int = 1
    memory_mb: int = 256
    disk_gb: int = 0
    ssh_key: str = ""
    image: str | None = None  # the OS image's path on the L0; None: the driver's built-in one
    rate_mbit: float = 0  # egress limit of its NIC; 0: none

    @property
    def ifnames(self) -> tuple[str, str]:
        return names.l1_port(self.name)


@dataclass(frozen=True)
class Volume:
    """A volume in a storage pool on ``host``; with ``address``, exported over NFS by a server in
    namespace ``netns`` whose only NIC is an access port on the segment, on ``vlan``."""

    name: str
    host: str
    pool: str  # the pool's directory on the host
    segment: Segment
    owner: str
    tenant: str
    nic: str  # names the export's veth pair (see names.l1_port)
    l0: L0 | None = None  # the host as a mesh member; None: it holds no part of the segment
    size_gb: int = 0
    size_mb: int = 0
    keep: bool = False
    netns: str | None = None
    address: str | None = None
    vlan: int | None = None


@dataclass(frozen=True)
class Router:
    """Model (c): a namespace on the first HaaS gateway forwarding between the routed segment (where
    it is the L1s' gateway, ``address``) and the tenant's own L2 (``iaas_address``)."""

    netns: str
    segment: Segment
    address: str
    iaas_address: str
    owner: str
    legs: tuple[str, str]  # name the veth pairs of its leg on the segment and of its leg on the tenant's L2
    vlan: int | None = None


@dataclass
class Tenant:
    """Everything planned for one tenant. ``segment`` is its own L2 extension (model a)."""

    name: str
    segment: Segment
    sites: list[IaasSite] = field(default_factory=list)
    gateways: list[HaasGateway] = field(default_factory=list)
    l1s: list[L1] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)

    @property
    def owner(self) -> str:
        """The owner of what the tenant's segments share (bridges, tunnels, limits)."""
        return f"tenant:{self.name}"


def router_interface(subnet: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Model (c): the router's address in the L1s' subnet (its first host), the L1s' gateway."""
    net = ipaddress.ip_network(subnet)
    return ipaddress.ip_interface(f"{next(net.hosts())}/{net.prefixlen}")
