"""Value types shared by the coordinator and the hosts: field types of ops and API schemas, and the
enumerations (NSI states, L1 kinds, service models, node states) as ``StrEnum`` s.

A ``StrEnum`` member *is* its string (``ReservationState.HELD == "ReserveHeld"``), so the values
stored in the database and sent in JSON are NSI's names, unchanged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field

IfName = Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.~-]+$")]
Vlan = Annotated[int, Field(ge=1, le=4094)]
# what the operator and tenants name things by (tenants, sites, nodes, pools): it fits the database's
# String(64) columns, and is safe in a log line and a URL path
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
# one L1's flavor: the API accepts exactly what the hosts' ops accept, so nothing admitted can break a
# host's desired state
MAX_GB = 1 << 20  # a disk or a volume
MAX_MBPS = 100_000  # tc shapes up to 100 Gbit/s
HORIZON_S = 10 * 365 * 86400  # how far ahead anything may be booked or last: the calendar is not a forever
Cpus = Annotated[int, Field(ge=1, le=256)]
MemoryMb = Annotated[int, Field(ge=64, le=1 << 20)]
DiskGb = Annotated[int, Field(ge=0, le=MAX_GB)]
Mbps = Annotated[int, Field(ge=1, le=MAX_MBPS)]  # a reservation's bandwidth
DurationS = Annotated[int, Field(ge=1, le=HORIZON_S)]
# a network namespace Iris made: its name is a file in /run/netns, so no dots and no slashes
# ("../../proc/1/ns/net" would be the host's own namespace)
NetnsName = Annotated[str, Field(min_length=5, max_length=64, pattern=r"^iris[A-Za-z0-9_-]+$")]
# where the coordinator reaches a host's agent
AgentUrl = Annotated[str, Field(max_length=256, pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")]
# where a tenant's webhook receives its events: http or https, a host name or IPv4 address, a port
# that exists, a path; no user info, no fragment. It fits the column (store.models.WEBHOOK_URL_MAX).
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
WebhookUrl = Annotated[str, Field(max_length=512, pattern=(
    rf"^https?://{_LABEL}(\.{_LABEL})*(:{_PORT})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"))]


# NSI (OGF GFD.202/GFD.237): an NSA is named ``urn:ogf:network:<domain>:<date>:<name>``; an STP is a
# port of a provider's network, with its VLANs as a label (``?vlan=1780-1799`` or ``?vlan=1780``).
_URN = r"urn:ogf:network:[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._+-]+)+"
NsaId = Annotated[str, Field(max_length=256, pattern=rf"^{_URN}$")]
NsiProviderUrl = Annotated[str, Field(max_length=512, pattern=(
    rf"^https?://{_LABEL}(\.{_LABEL})*(:{_PORT})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"))]


def stp_vlans(stp: str) -> tuple[int, int] | None:
    """The VLAN range of an STP's label (``?vlan=A`` or ``?vlan=A-B``), None without one."""
    _, _, label = stp.partition("?vlan=")
    if not label:
        return None
    lo, _, hi = label.partition("-")
    return int(lo), int(hi or lo)


_VID = r"(409[0-4]|40[0-8][0-9]|[1-3][0-9]{3}|[1-9][0-9]{0,2})"  # 1-4094
# (that a range's low end comes first is the link's rule: a pattern cannot say it)
StpId = Annotated[str, Field(max_length=256, pattern=rf"^{_URN}(\?vlan={_VID}(-{_VID})?)?$")]


def _plain_path(v: str) -> str:
    if any(part in (".", "..") for part in v.split("/")):
        raise ValueError("no . or .. components")
    return v


# a directory on a host, absolute and literal: no .., no control characters
HostPath = Annotated[str, Field(max_length=256, pattern=r"^/[^\x00-\x1f\x7f]*$",
                                json_schema_extra={"pattern": r"^(?!.*/\.\.?(/|$))/[^\x00-\x1f\x7f]*$"}),
                     AfterValidator(_plain_path)]
# one OpenSSH public key on one line: it is written into the L1's authorized_keys
SshKey = Annotated[str, Field(max_length=4096,
                              pattern=r"^((ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}( [^\x00-\x1f\x7f]*)?)?$")]


def _parses(parse: Callable[[str], Any]) -> AfterValidator:
    def check(v: str) -> str:
        parse(v)  # raises ValueError, which pydantic reports against the field
        return v

    return AfterValidator(check)


# The data plane is IPv4 end to end (GRE over IPv4, the tc filters, the lab): IPv6 and scope ids
# ("fe80::1%eth0") are refused where they would reach a host, not written into OVSDB.
# The patterns say in the OpenAPI document what the parsers accept.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
IpAddr = Annotated[str, Field(pattern=rf"^{IPV4}$"), _parses(ipaddress.IPv4Address)]
# an address with its prefix, 10.0.101.5/24
Cidr = Annotated[str, Field(pattern=rf"^{IPV4}/(3[0-2]|[12]?[0-9])$"), _parses(ipaddress.IPv4Interface)]
Network = Annotated[str, Field(pattern=rf"^{IPV4}/(3[0-2]|[12]?[0-9])$"),
                    _parses(lambda v: ipaddress.IPv4Network(v, strict=False))]


class ReservationState(StrEnum):
    START = "ReserveStart"
    CHECKING = "ReserveChecking"
    HELD = "ReserveHeld"
    COMMITTING = "ReserveCommitting"
    FAILED = "ReserveFailed"
    TIMEOUT = "ReserveTimeout"
    ABORTING = "ReserveAborting"


class ProvisionState(StrEnum):
    RELEASED = "Released"
    PROVISIONING = "Provisioning"
    PROVISIONED = "Provisioned"
    RELEASING = "Releasing"


class LifecycleState(StrEnum):
    CREATED = "Created"
    FAILED = "Failed"
    PASSED_END_TIME = "PassedEndTime"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class L1Kind(StrEnum):
    """What an L1 is on its L0: a network namespace (tests), an LXC container, a KVM guest."""

    NETNS = "netns"
    LXC = "lxc"
    KVM = "kvm"


class ServiceModel(StrEnum):
    """How the tenant's IaaS sees the lent nodes: (a) in its own L2, (b) a pod, (c) routed."""

    NODE = "a"
    POD = "b"
    ROUTED = "c"


class DatapathType(StrEnum):
    """Open vSwitch's datapath for an agent's bridges: the kernel's (real hosts) or userspace (the lab)."""

    SYSTEM = "system"
    NETDEV = "netdev"


class NodeState(StrEnum):
    AVAILABLE = "available"
    MAINTENANCE = "maintenance"
    DOWN = "down"
