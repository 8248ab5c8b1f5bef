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
==================  =====================================  ==========================

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


def lab_netns(lab: str, node: str) -> str:
    # Namespace names are file names, not interface names: no 15-character limit.
    return f"{PREFIX}-{lab}-{node}"


def tenant_key(tenant: str) -> int:
    """A default GRE key for a tenant, when the NRM did not assign one (32-bit, never 0)."""
    return int(_h(tenant, 8), 16) % (2**31 - 2) + 1
