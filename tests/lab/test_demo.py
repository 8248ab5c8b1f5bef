"""A reduced `iris demo` (shorter measurements, one kvm L1): every check passes and the report
is complete: the tables' pairs between real QEMU user VMs, the data path alone between
namespaces, the chart."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from iris_haas.demo import lab as demo

pytestmark = pytest.mark.lab

QEMU_PAIRS = {"IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)", "IaaS-HaaS(K)"}


def test_reduced_demo(tmp_path):
    assert demo.run(Console(width=120, record=True), out=tmp_path, quick=True) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"] and all(report["checks"].values())
    m, dp = report["measured"], report["datapath"]
    # guest to guest, from inside QEMU: every pair answered, TCP went through
    assert set(m["rtt_ms"]) == set(m["goodput_mbps"]) == QEMU_PAIRS
    assert all(v > 0 for v in m["rtt_ms"].values()), m
    assert all(v > 0 for v in m["goodput_mbps"].values()), m
    assert set(report["not_measured"]) == {"HaaS(K)-HaaS(K)"}  # the quick mode's one kvm L1
    # a guest adds its own stack (TCG) to the path the namespaces measure alone
    assert set(dp["rtt_ms"]) == {"IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)"}
    assert all(m["rtt_ms"][k] > dp["rtt_ms"][k] for k in dp["rtt_ms"]), (m, dp)
    assert min(dp["goodput_mbps"].values()) >= 100
    # a guest in a kvm L1 is TCG inside TCG: slower to answer than one in an lxc L1
    assert m["rtt_ms"]["IaaS-HaaS(K)"] > m["rtt_ms"]["IaaS-HaaS(L)"]
    boot = report["user_vms"]["boot_s"]
    assert set(boot) == {"aqi1", "aqi2", "aql1", "aql2", "aqk1"} and all(v > 0 for v in boot.values())
    assert 150 <= report["shaped_mbps"]["measured"] <= 205
    assert (tmp_path / "demo-network.png").stat().st_size > 10_000
