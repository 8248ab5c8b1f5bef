"""The demo's matrix, as data: every pair measured or in the paper gets a row, in the tables'
order, with the QEMU guests', the namespaces' and the paper's figures side by side."""

from __future__ import annotations

import pytest
from rich.console import Console

from iris_haas.demo import lab

pytestmark = pytest.mark.unit


def test_the_matrix_puts_each_pair_beside_the_papers_figures():
    report = {"paper": lab.PAPER,
              "measured": {"rtt_ms": {"IaaS-HaaS(K)": 13.3, "IaaS-IaaS": 2.9}, "goodput_mbps": {"IaaS-IaaS": 153.3}},
              "datapath": {"rtt_ms": {"IaaS-IaaS": 0.99}, "goodput_mbps": {"IaaS-IaaS": 642.0}}}
    assert lab._labels(report) == ["IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)", "IaaS-HaaS(K)", "HaaS(K)-HaaS(K)"]
    c = Console(width=200, record=True)
    c.print(lab._matrix_table(report))
    rows = {ln.split("│")[1].strip(): [x.strip() for x in ln.split("│")[2:-1]]
            for ln in c.export_text().splitlines() if ln.startswith("│")}
    assert rows["IaaS-IaaS"] == ["2.900", "0.990", "0.36", "153.3", "642", "934"]
    assert rows["IaaS-HaaS(K)"] == ["13.300", "-", "1.22", "-", "-", "-"]
    assert rows["HaaS(K)-HaaS(K)"] == ["-", "-", "-", "-", "-", "621"]
