"""The op vocabulary: the desired network state of one host, as data.

The NRM derives, for every host (an L0 node or a gateway), the full list of ops that host must
hold, and sends it to the host's agent (``PUT /v1/desired``). The agent reconciles: it creates
what is missing, converges what differs and deletes what it made earlier that is no longer
wanted. Objects are found again through their names and OVS ``external_ids``
(``iris-op``, ``iris-owner``, ``iris-tenant``), so only Iris's own objects are ever touched.
An op list is therefore idempotent: sending the same list twice changes nothing the second time.

Ops (``op`` is the discriminator):

``bridge``
    An OVS bridge, one per tenant per host (``names.segment_bridge``). ``datapath_type`` left
    empty means the agent's configured default (``system`` in production, ``netdev`` in the lab).
``tunnel``
    A GRE port on a bridge to ``remote_ip`` with the tenant's ``key``. ``mesh=True`` marks a
    member of the tenant's full mesh in the HaaS DC: OVS ``protected`` ports, so a frame that came
    in on one mesh tunnel never leaves on another (split horizon; the mesh has no loops).
    ``mesh=False`` is the inter-DC trunk to the tenant's IaaS gateway. No tag and no trunks:
    every VLAN 1-4094 is carried, 802.1Q tags inside GRE.
``port``
    An L1's NIC: a veth pair whose L0 end (``name``) is on ``bridge`` and whose other end
    (``l1_ifname``) is inside the L1 (``l1_netns``: the L1's network namespace; created if
    missing, as the netns L1 driver does). ``vlan`` with ``trunk=False``: an access port.
    ``vlan`` with ``trunk=True``: that VLAN untagged (native) and every other VLAN tagged, as
    an IaaS KVM host's NIC. With ``l1_netns`` empty, ``name`` is an existing device (an uplink).
    The L1 end gets TX checksum offload off and an MTU that fits inside the tunnel.
``shape``
    Egress limit of an L1 port (the port op named ``port``), ``rate_mbit`` Mbit/s, tc htb.
``tunnel_limit``
    Per-tenant limit on the inter-DC tunnel at a gateway: traffic leaving ``uplink`` towards
    ``remote_ip`` (the tenant's IaaS gateway) is held to ``rate_mbit``.
``l1``
    An L1 node (:mod:`iris_haas.hostd.l1`): ``kind`` ``netns`` | ``lxc`` | ``kvm``, with the
    flavor (``cpus``, ``memory_mb``, ``disk_gb``: an lxc L1's rootfs is an image of that size),
    the management address (``address``, optional ``gateway``), the tenant's ``ssh_key`` and the OS
    ``image`` (a path under the agent's image roots; none: the driver's small built-in one). Its one NIC is wired as a ``port`` op would be (``bridge``,
    ``port`` = the L0-side name, ``vlan`` = the tenant's management VLAN, native when ``trunk``):
    the reconciler derives that port op itself (:meth:`L1Op.port_op`), so the L1 never gets a
    second NIC. ``netns`` is the L1's network namespace (every kind; a kvm L1's QEMU runs there,
    its tap wired to the NIC's L1 end, and the guest has a network stack of its own).
``circuit``
    A gateway's end of an NSI circuit (a VLAN the WAN provider carries between two gateways'
    WAN ports): the bridge ``name`` (``names.circuit_bridge``) holding ``address`` and, as a
    patch port on the bridge that holds ``uplink``, an access port on ``vlan``. A tunnel whose
    ``local_ip`` is that address then leaves tagged with ``vlan`` on the uplink (the userspace
    datapath sends a tunnel through the bridge that holds its route's address).
``volume``
    A volume of ``size_mb`` MiB (or ``size_gb`` GiB) in the storage pool ``pool`` (a directory on
    this host), formatted and mounted on the host and, when ``netns`` is set, exported over NFS
    by a userspace server (nfs-ganesha) running inside that namespace, bound to ``address``
    (the namespace's only NIC is a ``port`` op on the tenant's bridge). Release wipes the data
    unless ``keep``. See :mod:`iris_haas.hostd.storage`.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iris_haas.contract.types import (
    MAX_MBPS,
    Cidr,
    Cpus,
    DiskGb,
    HostPath,
    IfName,
    IpAddr,
    L1Kind,
    MemoryMb,
    NetnsName,
    Network,
    SshKey,
    Vlan,
)


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    owner: str = Field(default="", description="reservation id (or lab name) that wants this object")
    tenant: str = ""

    def ident(self) -> tuple:
        """Identity of the object the op describes (two ops with one key describe one object)."""
        return (self.op, self.name)  # type: ignore[attr-defined]


class BridgeOp(_Op):
    op: Literal["bridge"] = "bridge"
    name: IfName
    datapath_type: Literal["system", "netdev", ""] = ""


class TunnelOp(_Op):
    op: Literal["tunnel"] = "tunnel"
    bridge: IfName
    name: IfName
    remote_ip: IpAddr
    key: int | None = Field(default=None, ge=0, le=2**32 - 1)
    local_ip: IpAddr | None = None
    mesh: bool = True



class PortOp(_Op):
    op: Literal["port"] = "port"
    bridge: IfName
    name: IfName
    l1_netns: NetnsName | None = None
    l1_ifname: IfName | None = None
    vlan: Vlan | None = None
    trunk: bool = False
    mtu: int = Field(default=1500, ge=576, le=9000)
    address: Cidr | None = Field(default=None, description="optional address inside the L1")
    router: bool = Field(default=False, description="the namespace forwards IPv4 between its ports: a router's "
                         "leg (service model c)")



class ShapeOp(_Op):
    op: Literal["shape"] = "shape"
    port: IfName
    rate_mbit: float = Field(gt=0, le=MAX_MBPS)

    def ident(self) -> tuple:
        return (self.op, self.port)


class TunnelLimitOp(_Op):
    op: Literal["tunnel_limit"] = "tunnel_limit"
    uplink: IfName
    remote_ip: IpAddr
    rate_mbit: float = Field(gt=0, le=MAX_MBPS)

    def ident(self) -> tuple:
        return (self.op, self.uplink, self.remote_ip)


class CircuitOp(_Op):
    op: Literal["circuit"] = "circuit"
    name: IfName
    uplink: IfName = Field(description="the NIC towards the WAN provider, a port of an OVS bridge")
    vlan: Vlan
    address: Cidr


class L1Op(_Op):
    op: Literal["l1"] = "l1"
    kind: L1Kind
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$", description="the L1's name, unique on its L0")
    bridge: IfName
    port: IfName
    l1_ifname: IfName | None = None
    netns: NetnsName | None = None
    vlan: Vlan | None = None
    trunk: bool = True
    mtu: int = Field(default=1500, ge=576, le=9000)
    mac: str | None = Field(default=None, pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
    address: Cidr | None = Field(default=None, description="management address")
    gateway: IpAddr | None = None
    cpus: Cpus = 1
    memory_mb: MemoryMb = 256
    disk_gb: DiskGb = Field(default=0, description="root disk (lxc: the rootfs image); 0: the smallest")
    ssh_key: SshKey = ""
    image: HostPath | None = Field(default=None, description="the OS image on this host (lxc: a rootfs directory "
                                   "with an SSH server); None: the driver's built-in busybox one")

    def port_op(self) -> PortOp:
        """The L1's one NIC as a port op: a veth into the L1's namespace, for every kind (a kvm
        L1's tap is wired to that end inside the namespace, so its port is shaped like any other).
        A kvm guest configures its address itself, not the reconciler."""
        vm = self.kind == L1Kind.KVM
        return PortOp(bridge=self.bridge, name=self.port, l1_netns=self.netns, l1_ifname=self.l1_ifname,
                      vlan=self.vlan, trunk=self.trunk, mtu=self.mtu,
                      address=None if vm else self.address, owner=self.owner, tenant=self.tenant)


class VolumeOp(_Op):
    op: Literal["volume"] = "volume"
    name: str = Field(pattern=r"^iris-[a-z0-9][a-z0-9-]{0,58}$")
    pool: HostPath = Field(description="the pool's directory, absolute")
    size_gb: int = Field(default=0, ge=0)
    size_mb: int = Field(default=0, ge=0, description="overrides size_gb: MiB, for small lab volumes")
    keep: bool = False
    netns: NetnsName | None = Field(default=None,
                              description="namespace the export server runs in; None: not exported")
    address: Cidr | None = Field(default=None, description="the server's address in netns")
    clients: Network | None = Field(default=None, description="who may mount; default: address's subnet")



    @model_validator(mode="after")
    def _check(self):
        if self.mib <= 0:
            raise ValueError("a volume needs size_mb or size_gb")
        if (self.netns is None) != (self.address is None):
            raise ValueError("an export needs both netns and address")
        return self

    @property
    def mib(self) -> int:
        return self.size_mb or self.size_gb * 1024


Op = Annotated[BridgeOp | TunnelOp | PortOp | ShapeOp | TunnelLimitOp | CircuitOp | L1Op | VolumeOp, Field(discriminator="op")]


class DesiredState(BaseModel):
    """Everything one host must hold. ``version`` is the NRM's counter, echoed back in reports."""

    model_config = ConfigDict(extra="forbid")
    version: int = 0
    ops: list[Op] = Field(default_factory=list)

    @field_validator("ops")
    @classmethod
    def _unique(cls, ops):
        seen = set()
        for o in ops:
            for i in (o.ident(), *((o.port_op().ident(),) if isinstance(o, L1Op) else ())):
                if i in seen:
                    raise ValueError(f"two ops for one object: {i}")
                seen.add(i)
        return ops


# GRE overhead on the underlay for a tagged frame: outer IPv4 20 + GRE 4 (+4 with a key) + the
# inner Ethernet header 14 + one 802.1Q tag 4: 46 bytes with a key, 42 without.
def gre_overhead(keyed: bool = True) -> int:
    return 20 + 4 + (4 if keyed else 0) + 14 + 4


def inner_mtu(underlay_mtu: int, wanted: int = 1500, keyed: bool = True) -> int:
    """The largest L1 MTU that still fits through a GRE tunnel over ``underlay_mtu``."""
    return min(wanted, underlay_mtu - gre_overhead(keyed))


# Each NSI circuit is a point-to-point L2 path between two gateways' WAN ports on one VLAN; its two
# ends take a /30 of this block derived from the VLAN (a VLAN is one circuit's on a port): the HaaS
# gateway the first host, the IaaS gateway the second. Private to the circuit, never routed.
CIRCUIT_BLOCK = ipaddress.ip_network("198.18.64.0/18")


def circuit_ends(vlan: int) -> tuple[str, str]:
    """(the HaaS end, the IaaS end) of the circuit on ``vlan``, as address/prefix."""
    if not 1 <= vlan <= 4094:
        raise ValueError(f"VLAN {vlan} is not in 1-4094")
    base = int(CIRCUIT_BLOCK.network_address) + 4 * vlan
    return (f"{ipaddress.ip_address(base + 1)}/30", f"{ipaddress.ip_address(base + 2)}/30")
