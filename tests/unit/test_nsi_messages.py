"""NSI CS 2.0 messages: every one built is valid against the OGF schemas, and reads back."""

from __future__ import annotations

import pytest

from iris_haas.nsi import messages as m
from tests.nsi import SCHEMAS, validator

pytestmark = pytest.mark.unit

REQ, PROV = "urn:ogf:network:iris.example:2026:nsa:iris", "urn:ogf:network:lab.iris:2026:nsa:upa"
CID = "urn:uuid:0b0e7e4c-1d1d-4c3a-9b1e-0123456789ab"
CRIT = m.Criteria(1, 2_000_000_000.0, 2_000_003_600.0, 100, "urn:ogf:network:lab.iris:2026:dc1?vlan=1780-1799",
                  "urn:ogf:network:lab.iris:2026:dc2?vlan=1780-1799",
                  "http://services.ogf.org/nsi/2013/12/descriptions/EVTS.A-GOLE")
EXC = m.ServiceException(PROV, "00705", "CAPACITY_UNAVAILABLE: 100 Mb/s asked, 50 free", CID)


@pytest.fixture(scope="module")
def xsd():
    return validator()


def _all(h: m.Header) -> dict[str, bytes]:
    a = h.answer()
    return {
        "reserve": m.reserve(h, CRIT, global_reservation_id=m.new_correlation_id(), description="iris r1"),
        **{op: m.generic(h, op, CID) for op in ("reserveCommit", "reserveAbort", "provision", "release", "terminate")},
        "querySummarySync": m.query_summary_sync(h, [CID]),
        "reserveResponse": m.reserve_response(a, CID),
        "acknowledgment": m.acknowledgment(a),
        "reserveConfirmed": m.reserve_confirmed(a, CID, CRIT),
        **{op: m.generic(a, op, CID) for op in m.CONFIRMATIONS if op != "reserveConfirmed"},
        "reserveFailed": m.failed(a, "reserveFailed", CID, m.States(reservation="ReserveFailed"), EXC),
        "reserveCommitFailed": m.failed(a, "reserveCommitFailed", CID, m.States(reservation="ReserveHeld"), EXC),
        "Fault": m.fault(a, EXC),
        "dataPlaneStateChange": m.data_plane_state_change(a, CID, 1, 2e9, active=True, version=1),
        "reserveTimeout": m.reserve_timeout(a, CID, 2, 2e9, timeout_s=60, provider_nsa=PROV),
        "errorEvent": m.error_event(a, CID, 3, 2e9, event="forcedEnd", provider_nsa=PROV, exception=EXC),
        "querySummarySyncConfirmed": m.query_summary_sync_confirmed(a, [(CID, REQ, CRIT, m.States())]),
    }


def test_every_message_is_schema_valid_and_reads_back(xsd):
    h = m.Header(REQ, PROV, reply_to="http://127.0.0.1:8642/nsi/requester")
    for op, data in _all(h).items():
        xsd.check(data)
        msg = m.parse(data)
        assert msg.operation == op
        assert msg.header.correlation_id == h.correlation_id
        if op not in ("reserve", "acknowledgment", "querySummarySync", "Fault", "querySummarySyncConfirmed"):
            assert msg.connection_id == CID, op
    r = m.parse(m.reserve(h, CRIT))
    assert r.criteria == CRIT and r.header.reply_to == h.reply_to and r.header.protocol_version == m.PROVIDER_PROTOCOL
    assert m.parse(m.reserve_confirmed(h.answer(), CID, CRIT)).header.protocol_version == m.REQUESTER_PROTOCOL
    for op in ("reserveFailed", "Fault", "errorEvent"):
        assert m.parse(_all(h)[op]).exception == EXC, op
    d = m.parse(_all(h)["dataPlaneStateChange"])
    assert (d.active, d.data_plane_version, d.consistent, d.notification_id) == (True, 1, True, 1)
    assert m.parse(_all(h)["reserveTimeout"]).timeout_s == 60
    assert m.parse(_all(h)["errorEvent"]).event == "forcedEnd"
    assert m.parse(_all(h)["querySummarySync"]).connection_ids == [CID]
    assert m.parse(_all(h)["querySummarySyncConfirmed"]).summaries[0]["criteria"] == CRIT


def test_soap_actions_are_quoted_wsdl_uris():
    wsdl = (SCHEMAS / "ogf_nsi_connection_provider_v2_0.wsdl").read_text()
    for op in m.REQUESTS:
        assert m.soap_action(op).startswith('"') and m.soap_action(op).endswith('"')
        assert f'soapAction={m.soap_action(op)}' in wsdl, op


def test_the_validator_refuses(xsd):
    h = m.Header(REQ, PROV)
    assert xsd.errors(m.reserve(h, CRIT).replace(b"<capacity>100", b"<capacity>lots"))  # inside p2ps (lax)
    assert xsd.errors(m.generic(h, "provision", CID).replace(b"connectionId>", b"connection>"))
    assert xsd.errors(m.generic(h, "provision", CID).replace(b">urn:uuid:", b">uuid:"))  # the header's pattern


def test_the_specifications_examples_read(xsd):
    examples = SCHEMAS / "examples"
    r = m.parse((examples / "nsi_cs_2.1_section_19.6_figure_143_reserve.xml").read_bytes())
    assert r.operation == "reserve" and r.criteria and r.criteria.capacity_mbps == 10000
    assert r.criteria.source_stp.endswith("?vlan=1780-1782")
    ok = m.parse((examples / "nsi_cs_2.1_section_19.6_figure_145_reserveConfirmed.xml").read_bytes())
    assert ok.operation == "reserveConfirmed" and ok.connection_id
    failed = m.parse((examples / "nsi_cs_2.1_section_19.6_figure_147_reserveFailed.xml").read_bytes())
    assert failed.operation == "reserveFailed" and failed.exception and failed.exception.error_id


@pytest.mark.parametrize("data", [b"not xml", b"<a/>", b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/'
                                  b'envelope/"><e:Body><x/></e:Body></e:Envelope>',
                                  b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'])
def test_garbage_is_a_message_error(data):
    with pytest.raises(m.MessageError):
        m.parse(data)


def test_a_fault_with_the_framework_types_service_exception_reads(xsd):
    data = m.fault(m.Header(REQ, PROV).answer(), EXC).replace(b"type:serviceException", b"ftypes:serviceException")
    xsd.check(data)
    assert m.parse(data).exception == EXC
