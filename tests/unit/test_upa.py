"""The lab's uPA admission, message by message: capacity over the schedule, VLANs in use, unknown
STPs, illegal transitions, each refused with NSI's error id; every answer schema-valid."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from iris_haas.lab.upa import Circuit, Port, Provider
from iris_haas.nsi import messages as m
from tests.nsi import validator

pytestmark = pytest.mark.unit

REQ, PROV = "urn:ogf:network:iris.test:2026:nsa:iris", "urn:ogf:network:lab.iris:2026:nsa:upa"
A, B, C = ("urn:ogf:network:lab.iris:2026:" + g for g in ("hgw", "agw", "bgw"))


class NoCircuits:
    def up(self, c: Circuit) -> None:
        raise AssertionError("nothing is provisioned here")

    down = up


@pytest.fixture
def upa():
    xsd = validator()
    p = Provider(PROV, [Port(A, "hgw", (1780, 1781), 1000), Port(B, "agw", (1780, 1799), 1000),
                        Port(C, "bgw", (1780, 1799), 1000)], NoCircuits(), tap=lambda _, d: xsd.check(d))

    def ask(data: bytes) -> tuple[m.Message, list[m.Message]]:
        xsd.check(data)
        answer, _, callbacks, _ = p.handle(data)
        xsd.check(answer)
        for cb in callbacks:
            xsd.check(cb)
        return m.parse(answer), [m.parse(cb) for cb in callbacks]

    return p, ask


def reserve(src: str, dst: str, mbps: int, start: float = 0.0, end: float = 3600.0) -> bytes:
    return m.reserve(m.Header(REQ, PROV, reply_to="http://127.0.0.1:1/"),
                     m.Criteria(1, 2e9 + start, 2e9 + end, mbps, src, dst, "EVTS"))


def test_capacity_is_counted_over_the_schedule(upa):
    _, ask = upa
    ack, [ok] = ask(reserve(A, B, 600))
    assert ack.operation == "reserveResponse" and ok.operation == "reserveConfirmed"
    assert ok.criteria and ok.criteria.source_stp == f"{A}?vlan=1780"
    _, [no] = ask(reserve(A, C, 500))
    assert no.operation == "reserveFailed" and no.exception and no.exception.error_id == "00705"
    _, [later] = ask(reserve(A, C, 500, start=3600, end=7200))  # after the first: it fits
    assert later.operation == "reserveConfirmed"


def test_vlans_in_use_and_unknown_stps(upa):
    _, ask = upa
    assert ask(reserve(f"{A}?vlan=1780", B, 10))[1][0].operation == "reserveConfirmed"
    _, [no] = ask(reserve(f"{A}?vlan=1780", C, 10))  # 1780 is taken on hgw
    assert no.exception and no.exception.error_id == "00701"
    assert ask(reserve(A, C, 10))[1][0].criteria.source_stp.endswith("?vlan=1781")  # type: ignore[union-attr]
    _, [no] = ask(reserve(f"{A}?vlan=1790-1799", B, 10))  # outside what hgw carries
    assert no.exception and no.exception.error_id == "00701"
    _, [no] = ask(reserve("urn:ogf:network:lab.iris:2026:nowhere", B, 10))
    assert no.exception and no.exception.error_id == "00700"


def test_illegal_transitions_and_unknown_connections_are_faults(upa):
    p, ask = upa
    _, [ok] = ask(reserve(A, B, 10))
    h = m.Header(REQ, PROV)
    fault, _ = ask(m.generic(h, "provision", ok.connection_id or ""))  # not committed yet
    assert fault.operation == "Fault" and fault.exception and fault.exception.error_id == "00203"
    fault, _ = ask(m.generic(h, "reserveCommit", "urn:uuid:00000000-0000-4000-8000-000000000000"))
    assert fault.exception and fault.exception.error_id == "00201"
    other = m.Header("urn:ogf:network:other.test:2026:nsa:x", PROV)  # another requester's connection
    fault, _ = ask(m.generic(other, "reserveCommit", ok.connection_id or ""))
    assert fault.exception and fault.exception.error_id == "00201"
    _, [done] = ask(m.generic(h, "reserveCommit", ok.connection_id or ""))
    assert done.operation == "reserveCommitConfirmed"
    assert p.connections[ok.connection_id or ""].reservation == "ReserveStart"


def test_the_hold_hook_sets_the_hold_time_and_names_a_bad_field(upa):
    p, _ = upa
    with TestClient(p.app(settle_every_s=60)) as http:
        assert http.put("/lab/hold", json={"hold_s": 2}).json() == {"hold_s": 60.0}
        assert p.hold_s == 2.0
        for bad in ({"hold_s": 0}, {"hold_s": "x"}, {}):
            r = http.put("/lab/hold", json=bad)
            assert r.status_code == 422 and r.json()["field"] == "hold_s", r.text
        assert p.hold_s == 2.0


def test_query_answers_a_connection_with_no_version_left(upa):
    p, ask = upa
    h = m.Header(REQ, PROV)
    crit = m.Criteria(1, 2e9, 2e9 + 60, 100, f"{A}?vlan=1780-1781", B, "EVTS")
    ok, _ = ask(m.reserve(h, crit))
    ask(m.generic(m.Header(REQ, PROV), "reserveAbort", ok.connection_id or ""))
    out, _ = ask(m.query_summary_sync(m.Header(REQ, PROV), [ok.connection_id or ""]))
    assert [(s["connection_id"], s["reservation_state"], s["criteria"]) for s in out.summaries] == [
        (ok.connection_id, "ReserveStart", None)]
