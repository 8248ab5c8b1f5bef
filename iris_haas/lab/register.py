"""Register a running lab in a coordinator: the HaaS site, its L0s and gateway with their agents,
and one tenant per IaaS data center of the topology with its IaaS site and inter-DC link.

It goes through the coordinator's API client (the same calls an operator makes with `iris`), so
the lab exercises the real control plane.
"""

from __future__ import annotations

from iris_haas.api.client import Client
from iris_haas.lab.realizer import Lab


def register(lab: Lab, admin: Client, *, link_mbps: int = 1000, cpus: int = 8, memory_mb: int = 16384,
             disk_gb: int = 100) -> dict[str, str]:
    """Returns each tenant's API token."""
    t = lab.topo
    agents = {a.node: lab.agent_url(a.node) for a in lab.plan.agents}  # https: each agent's certificate names it
    admin.post("/sites", {"name": "haas"})
    admin.post("/gateways", {"name": "hgw", "site": "haas", "underlay_address": t.haas.gateway_ip,
                             "fabric_address": t.fab_ip("hgw"), "uplink": "up", "agent_url": agents.get("hgw")})
    for node in t.l0_nodes():
        admin.post("/nodes", {"name": node, "site": "haas", "cpus": cpus, "memory_mb": memory_mb, "disk_gb": disk_gb,
                              "l1_kinds": ["netns", "lxc", "kvm"], "underlay_address": t.fab_ip(node),
                              "agent_url": agents.get(node)})
    tokens = {}
    for x in t.iaas:
        tokens[x.tenant] = admin.post("/tenants", {"name": x.tenant, "tunnel_key": x.key})["token"]
        with Client(admin.url, tokens[x.tenant]) as tenant:
            tenant.post("/sites", {"name": f"iaas-{x.tenant}", "gateway_underlay": x.gateway_ip,
                                   "mgmt_vlan": x.mgmt_vlan, "service_model": "a"})
        admin.post("/links", {"name": f"inet-{x.tenant}", "site_a": "haas", "site_b": f"iaas-{x.tenant}",
                              "capacity_mbps": link_mbps})
    return tokens
