"""Bandwidth (paper §4.5): an egress limit per L1 port and a per-tenant limit on the inter-DC
tunnel, both tc htb, both changed by sending a new desired state."""

from __future__ import annotations

import pytest

from iris_haas.lab import probe
from iris_haas.lab.tenants import L1

pytestmark = pytest.mark.lab


def _goodput(lab, l1, server_node, server_ip):
    assert probe.reachable(lab.ns(l1), server_ip)
    with probe.Iperf3Server(lab.ns(server_node)):
        return probe.iperf3(lab.ns(l1), server_ip, seconds=3)


def test_reserved_100_mbit_gives_90_to_100_and_unshaped_gives_full_rate(lab, tenants):
    tenants.set([L1("a", "l0-1", "s1", vlan=101, address="10.0.101.21/24", rate_mbit=100)])
    shaped = _goodput(lab, "s1", "amgmt", "10.0.101.10")
    assert 90 <= shaped <= 100, shaped
    # changing the reservation changes the limit
    tenants.set([L1("a", "l0-1", "s1", vlan=101, address="10.0.101.21/24", rate_mbit=40)])
    lower = _goodput(lab, "s1", "amgmt", "10.0.101.10")
    assert 34 <= lower <= 40, lower
    # no limit: the userspace datapath's own rate (about 0.9-1.1 Gbit/s through one tunnel here)
    tenants.set([L1("a", "l0-1", "s1", vlan=101, address="10.0.101.21/24")])
    full = _goodput(lab, "s1", "amgmt", "10.0.101.10")
    assert full > 130, (full, shaped)  # well past the old ceiling (the datapath gives ~300-1000)


def test_per_tenant_limit_on_the_inter_dc_tunnel(lab, tenants):
    ports = [L1("a", "l0-2", "s2", vlan=102, address="10.0.102.21/24"),
             L1("b", "l0-2", "u2", vlan=102, address="10.0.102.21/24")]
    # limits well under what the userspace datapath carries even on a busy 2-CPU machine (~250)
    tenants.set(ports, {"a": 40})
    limited = _goodput(lab, "s2", "apub", "10.0.102.10")
    assert 32 <= limited <= 40, limited
    # the other tenant shares the gateway uplink but not the limit
    other = _goodput(lab, "u2", "bpub", "10.0.102.10")
    assert other > 2 * limited, other
    tenants.set(ports, {"a": 80})
    raised = _goodput(lab, "s2", "apub", "10.0.102.10")
    assert 64 <= raised <= 80, raised
