"""Naming scheme for everything Iris creates on a host.

Every kernel object Iris creates carries the ``iris`` prefix, and fits the kernel's
15-character interface-name limit (IFNAMSIZ - 1):

==================  =====================================  ==========================
object              name                                   example
==================  =====================================  ==========================
lab namespace       ``iris-<lab>-<node>``                  ``iris-t3f-l0-1``
tenant bridge       ``irisb-<tenant>``                     ``irisb-acme``
tenant tunnel       ``irist-<tenant>-<peer>``              ``irist-acme-3``
L1 port (L0 side)   ``irisp-<port>``                       ``irisp-web1``
L1 port (L1 side)   ``iris1-<port>``                       ``iris1-web1``
L1 (and its netns)  ``iris<res6><item><n>``                ``iris3fa9c1000``
volume              ``iris-<res8>-<item>``                 ``iris-3fa9c1d2-0``
export namespace    ``irisv<res8><item>``                  ``irisv3fa9c1d20``
router namespace    ``irisr<res8>``                        ``irisr3fa9c1d2``
==================  =====================================  ==========================

A tenant tunnel's ``<peer>`` says where it goes: ``x<site>`` (the trunk to an IaaS gateway),
``g<gateway>`` (a HaaS gateway), ``n<node>`` (another L0 of the mesh), by database id.

When the readable form is too long, the tail is replaced by a short hash of the whole
key, so names stay unique and deterministic (the same key always gives the same name).

OVS objects also carry ``external_ids`` (see :data:`OWNER` and friends) so that cleanup and
reconciliation find exactly the objects Iris made, whatever their name.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "iris"
IFNAMSIZ = 15

# external_ids keys on OVS rows
OWNER = "iris-owner"  # lab name or reservation id
OP = "iris-op"  # which op kind made the row: bridge / tunnel / port; absent on lab infrastructure
TENANT = "iris-tenant"

_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def _h(key: str, n: int) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:n]


def fit(name: str, limit: int = IFNAMSIZ) -> str:
    """Return ``name`` if it fits, else a deterministic shortened form ending in a hash."""
    name = _SAFE.sub("-", name)
    if len(name) <= limit:
        return name
    return name[: limit - 5] + "~" + _h(name, 4)


def ifname(kind: str, *parts: str) -> str:
    """An interface name ``iris<kind>-<parts...>``, at most 15 characters."""
    return fit(f"{PREFIX}{kind}-" + "-".join(str(p) for p in parts))


def tenant_bridge(tenant: str) -> str:
    return ifname("b", tenant)


def tenant_tunnel(tenant: str, peer: str) -> str:
    return ifname("t", tenant, peer)


def l1_port(port: str) -> tuple[str, str]:
    """(L0-side name, L1-side name) of the veth pair that is an L1's NIC."""
    return ifname("p", port), ifname("1", port)


def pod_segment(tenant: str, reservation_id: str) -> str:
    """A model (b) or (c) reservation's own segment: it names the segment's bridge and tunnels."""
    return f"{tenant}-{reservation_id[:6]}"


def trunk_peer(site_id: int) -> str:
    return f"x{site_id}"


def gateway_peer(gateway_id: int) -> str:
    return f"g{gateway_id}"


def l0_peer(node_id: int) -> str:
    return f"n{node_id}"


def l1_name(reservation_id: str, item: int, n: int) -> str:
    """The n-th L1 of a reservation's compute item: at most 15 characters and prefixed, so it also
    names the L1's namespace and container."""
    return f"{PREFIX}{reservation_id[:6]}{item:x}{n:03x}"[:IFNAMSIZ]


def volume(reservation_id: str, item: int) -> str:
    return f"{PREFIX}-{reservation_id[:8]}-{item}"


def volume_netns(reservation_id: str, item: int) -> str:
    """The namespace of a volume's export server."""
    return f"{PREFIX}v{reservation_id[:8]}{item:x}"


def router_netns(reservation_id: str) -> str:
    return f"{PREFIX}r{reservation_id[:8]}"


def router_leg(netns: str, side: str) -> str:
    """A model (c) router's leg on the routed ``segment`` or on the tenant's own L2 (``iaas``)."""
    return f"{netns}{'p' if side == 'segment' else 'i'}"


def lab_netns(lab: str, node: str) -> str:
    # Namespace names are file names, not interface names: no 15-character limit.
    return f"{PREFIX}-{lab}-{node}"


def tenant_key(tenant: str) -> int:
    """A default GRE key for a tenant, when the NRM did not assign one (32-bit, never 0)."""
    return int(_h(tenant, 8), 16) % (2**31 - 2) + 1
