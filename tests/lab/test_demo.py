"""A reduced `iris demo` (shorter measurements, no kvm L1): every check passes and the report is
complete: the tables' pairs between real QEMU user VMs on IaaS hosts and lxc L1s, the data path
alone between namespaces, the chart. (The full demo adds two kvm L1s, TCG inside TCG here: its
guests take minutes to boot.)"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from iris_haas.demo import lab as demo

pytestmark = pytest.mark.lab

QEMU_PAIRS = {"IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)"}


def test_reduced_demo(tmp_path):
    assert demo.run(Console(width=120, record=True), out=tmp_path, quick=True) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"] and all(report["checks"].values())
    m, dp = report["measured"], report["datapath"]
    # guest to guest, from inside QEMU: every pair answered, TCP went through
    assert set(m["rtt_ms"]) == set(m["goodput_mbps"]) == QEMU_PAIRS
    assert all(v > 0 for v in m["rtt_ms"].values()), m
    assert all(v > 0 for v in m["goodput_mbps"].values()), m
    assert set(report["not_measured"]) == {"IaaS-HaaS(K)", "HaaS(K)-HaaS(K)"}  # the quick mode: no kvm L1
    # a guest adds its own stack (TCG) to the path the namespaces measure alone
    assert set(dp["rtt_ms"]) == {"IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)"}
    assert all(m["rtt_ms"][k] > dp["rtt_ms"][k] for k in dp["rtt_ms"]), (m, dp)
    assert min(dp["goodput_mbps"].values()) >= 100
    boot = report["user_vms"]["boot_s"]
    assert set(boot) == {"aqi1", "aqi2", "aql1", "aql2"} and all(v > 0 for v in boot.values())
    assert 150 <= report["shaped_mbps"]["measured"] <= 205
    assert (tmp_path / "demo-network.png").stat().st_size > 10_000
