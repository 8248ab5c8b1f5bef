"""The OGF NSI CS 2.0 schemas the tests validate every message against: kept outside the
repository, next to it (``../shared/nsi``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iris_haas.nsi.xsd import Validator

SCHEMAS = Path(__file__).resolve().parents[1] / ".." / "shared" / "nsi"


def validator() -> Validator:
    if not (SCHEMAS / "ogf_nsi_connection_types_v2_0.xsd").exists():
        pytest.fail(f"the NSI schemas are not at {SCHEMAS}")
    return Validator(SCHEMAS)
