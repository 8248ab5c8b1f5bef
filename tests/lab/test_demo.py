"""A reduced `iris demo` (shorter measurements): every check passes and the report is complete."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from iris_haas.demo import lab as demo

pytestmark = pytest.mark.lab


def test_reduced_demo(tmp_path):
    assert demo.run(Console(width=120, record=True), out=tmp_path, quick=True) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks"] and all(report["checks"].values())
    assert set(report["measured"]["rtt_ms"]) == {"IaaS-IaaS", "IaaS-HaaS(L)", "HaaS(L)-HaaS(L)"}
    assert 150 <= report["shaped_mbps"]["measured"] <= 205
    assert (tmp_path / "demo-network.png").stat().st_size > 10_000
