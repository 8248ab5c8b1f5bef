"""Naming scheme for everything Iris creates on a host.

Every object Iris creates carries the ``iris`` prefix, and every interface name fits the
kernel's 15-character limit (IFNAMSIZ - 1). Names are unique **by construction**: each embeds a
number the database gives once (a tenant's id, a segment's number, an L1's or a volume's
sequence number, a node's, gateway's or site's id), written in base 36 so it stays short. No
name is ever shortened by a hash: a name that does not fit is refused (:class:`NameTooLong`),
which with base 36 happens only past 36**4 (1.6 million) nodes, sites or segments.

==================  =====================================  ==========================
object              name                                   example
==================  =====================================  ==========================
lab namespace       ``iris-<lab>-<node>``                  ``iris-t3f-l0-1``
segment             ``t<tenant>`` (model a), ``s<no>``     ``t1``, ``s2a``
segment bridge      ``irisb<segment>``                     ``irisbt1``
segment tunnel      ``irist<segment><peer>``               ``iristt1n3``
L1 (and its netns)  ``iris<l1 no>``                        ``iris2s``
L1 port (L0 side)   ``irisp-<L1>``                         ``irisp-iris2s``
L1 port (L1 side)   ``iris1-<L1>``                         ``iris1-iris2s``
volume              ``iris-v<volume no>``                  ``iris-v1b``
export namespace    ``irisv<volume no>``, NIC ``v<no>``    ``irisv1b``, ``irisp-v1b``
router namespace    ``irisr<segment no>``, legs ``r<no>s``, ``r<no>i``   ``irisr2a``
NSI circuit end     ``irisc<vlan>``, patch ``irisc<vlan>u``/``p``  ``irisc1780``
==================  =====================================  ==========================

A tunnel's ``<peer>`` says where it goes: ``x<site>`` (the trunk to an IaaS gateway),
``g<gateway>`` (a HaaS gateway), ``n<node>`` (another L0 of the mesh). Segment names start with
a letter and peers with one of ``xgn``, so ``<segment><peer>`` reads back one way only.

OVS objects also carry ``external_ids`` (see :data:`OWNER` and friends) so that cleanup and
reconciliation find exactly the objects Iris made, whatever their name.
"""

from __future__ import annotations

import string

PREFIX = "iris"
IFNAMSIZ = 15

# external_ids keys on OVS rows
OWNER = "iris-owner"  # lab name or reservation id
OP = "iris-op"  # which op kind made the row: bridge / tunnel / port; absent on lab infrastructure
TENANT = "iris-tenant"

_DIGITS = string.digits + string.ascii_lowercase


class NameTooLong(ValueError):
    pass


def b36(n: int) -> str:
    """``n`` (>= 0) in base 36, lower case: 1295 -> ``zz``."""
    if n < 0:
        raise ValueError("names number from 0")
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = _DIGITS[d] + out
        if n == 0:
            return out


def fits(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise NameTooLong(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def ifname(kind: str, *parts: str) -> str:
    """An interface name ``iris<kind>-<parts...>`` (for the lab's own devices)."""
    return fits(f"{PREFIX}{kind}-" + "-".join(str(p) for p in parts))


def tenant_segment(tenant_id: int) -> str:
    """The tenant's own segment (model a): its L2 extended into the HaaS DC."""
    return f"t{b36(tenant_id)}"


def pod_segment(segment_no: int) -> str:
    """A model (b) or (c) reservation's own segment."""
    return f"s{b36(segment_no)}"


def segment_bridge(segment: str) -> str:
    return fits(f"{PREFIX}b{segment}")


def segment_tunnel(segment: str, peer: str) -> str:
    return fits(f"{PREFIX}t{segment}{peer}")


def trunk_peer(site_id: int) -> str:
    return f"x{b36(site_id)}"


def gateway_peer(gateway_id: int) -> str:
    return f"g{b36(gateway_id)}"


def l0_peer(node_id: int) -> str:
    return f"n{b36(node_id)}"


def l1_port(port: str) -> tuple[str, str]:
    """(L0-side name, L1-side name) of the veth pair that is an L1's (or an export's) NIC."""
    return fits(f"{PREFIX}p-{port}"), fits(f"{PREFIX}1-{port}")


def l1_name(l1_no: int) -> str:
    """An L1: it also names the L1's namespace and container, and its NIC (:func:`l1_port`)."""
    return f"{PREFIX}{b36(l1_no)}"


def volume(volume_no: int) -> str:
    return f"{PREFIX}-v{b36(volume_no)}"


def volume_netns(volume_no: int) -> str:
    """The namespace of a volume's export server."""
    return f"{PREFIX}v{b36(volume_no)}"


def volume_nic(volume_no: int) -> str:
    """Names the export's veth pair (:func:`l1_port`)."""
    return f"v{b36(volume_no)}"


def circuit_bridge(vlan: int) -> str:
    """A gateway's end of an NSI circuit: the bridge holding the circuit's address. A VLAN is one
    circuit's on a gateway's WAN port (the provider's admission), so the VLAN names it."""
    return fits(f"{PREFIX}c{vlan}")


def circuit_patch(vlan: int) -> tuple[str, str]:
    """(on the uplink's bridge, on the circuit's bridge): the patch ports joining them."""
    return fits(f"{circuit_bridge(vlan)}u"), fits(f"{circuit_bridge(vlan)}p")


def router_netns(segment_no: int) -> str:
    return f"{PREFIX}r{b36(segment_no)}"


def router_leg(segment_no: int, side: str) -> str:
    """A model (c) router's leg on its routed ``segment`` or on the tenant's own L2 (``iaas``);
    names its veth pair (:func:`l1_port`)."""
    return f"r{b36(segment_no)}{'s' if side == 'segment' else 'i'}"


def lab_netns(lab: str, node: str) -> str:
    # Namespace names are file names, not interface names: no 15-character limit.
    return f"{PREFIX}-{lab}-{node}"


# the control channel's files (mutual TLS): a host's directory holds HOST_*, the coordinator's COORDINATOR_*,
# both the CA certificate that signed them
CA_CERT = "ca.crt"
HOST_KEY, HOST_CERT = "host.key", "host.crt"
COORDINATOR_KEY, COORDINATOR_CERT = "coordinator.key", "coordinator.crt"
COORDINATOR_URI = "iris:coordinator"  # the coordinator's identity (SAN URI of its client certificate)
