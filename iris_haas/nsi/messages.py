"""OGF NSI Connection Service 2.0 messages: SOAP 1.1 envelopes built and read with lxml.

Both sides are here: what a requester (Iris's NRM) sends and reads, and what a provider (the lab's
uPA) sends and reads, so the two cannot drift apart. Element names, their order and their
namespaces are the schemas' (connection types, framework headers and types, point-to-point
service); the child elements of NSI's types are unqualified, as the schemas declare them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
HEADERS = "http://schemas.ogf.org/nsi/2013/12/framework/headers"
CTYPES = "http://schemas.ogf.org/nsi/2013/12/connection/types"
FTYPES = "http://schemas.ogf.org/nsi/2013/12/framework/types"
P2P = "http://schemas.ogf.org/nsi/2013/12/services/point2point"
SERVICE = "http://schemas.ogf.org/nsi/2013/12/connection/service"
NSMAP = {"soapenv": SOAP, "header": HEADERS, "type": CTYPES, "ftypes": FTYPES, "p2p": P2P}

PROVIDER_PROTOCOL = "application/vnd.ogf.nsi.cs.v2.provider+soap"
REQUESTER_PROTOCOL = "application/vnd.ogf.nsi.cs.v2.requester+soap"
CONTENT_TYPE = "text/xml; charset=utf-8"

# the provider's operations a requester sends, and the callbacks it answers
REQUESTS = ("reserve", "reserveCommit", "reserveAbort", "provision", "release", "terminate", "querySummarySync")
CONFIRMATIONS = ("reserveConfirmed", "reserveCommitConfirmed", "reserveAbortConfirmed", "provisionConfirmed",
                 "releaseConfirmed", "terminateConfirmed")
FAILURES = ("reserveFailed", "reserveCommitFailed", "error")
NOTIFICATIONS = ("dataPlaneStateChange", "reserveTimeout", "errorEvent", "messageDeliveryTimeout")

# NSI CS 2.0 error ids (GFD.237, appendix) the uPA answers and the requester names
ERRORS = {
    "00101": "PAYLOAD_ERROR", "00201": "CONNECTION_NONEXISTENT", "00203": "INVALID_TRANSITION",
    "00500": "INTERNAL_ERROR", "00700": "STP_RESOLUTION_ERROR", "00701": "STP_UNAVAILABLE",
    "00704": "UNSUPPORTED_PARAMETER", "00705": "CAPACITY_UNAVAILABLE",
}


def soap_action(operation: str) -> str:
    """The SOAPAction header of an operation: its WSDL URI, quoted as SOAP 1.1 wants it."""
    return f'"{SERVICE}/{operation}"'


def new_correlation_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def xml_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Header:
    """nsiHeader: who sends to whom, and the correlationId that pairs a request with its answer."""

    requester_nsa: str
    provider_nsa: str
    correlation_id: str = field(default_factory=new_correlation_id)
    reply_to: str | None = None
    protocol_version: str = PROVIDER_PROTOCOL

    def answer(self, protocol: str = REQUESTER_PROTOCOL) -> Header:
        """The header of a callback answering this request: same correlationId, no replyTo."""
        return Header(self.requester_nsa, self.provider_nsa, self.correlation_id, None, protocol)


@dataclass(frozen=True)
class ServiceException:
    nsa_id: str
    error_id: str
    text: str
    connection_id: str | None = None
    service_type: str | None = None

    def __str__(self) -> str:
        return f"{self.error_id} {self.text}"


@dataclass(frozen=True)
class Criteria:
    """One version of a point-to-point reservation."""

    version: int
    start: float
    end: float
    capacity_mbps: int
    source_stp: str
    dest_stp: str
    service_type: str


@dataclass(frozen=True)
class States:
    reservation: str = "ReserveStart"
    provision: str = "Released"
    lifecycle: str = "Created"
    active: bool = False
    version: int = 0
    consistent: bool = True


@dataclass
class Message:
    """A received NSI message: its header and body element name, and what Iris reads from it."""

    header: Header
    operation: str  # the body element's local name (reserve, reserveConfirmed, acknowledgment, Fault, ...)
    connection_id: str | None = None
    criteria: Criteria | None = None
    exception: ServiceException | None = None
    active: bool | None = None  # dataPlaneStateChange
    data_plane_version: int | None = None
    consistent: bool | None = None
    timeout_s: int | None = None  # reserveTimeout
    event: str | None = None  # errorEvent
    notification_id: int | None = None
    global_reservation_id: str | None = None
    description: str | None = None
    connection_ids: list[str] = field(default_factory=list)  # querySummarySync
    summaries: list[dict] = field(default_factory=list)  # querySummarySyncConfirmed


class MessageError(ValueError):
    """Not an NSI message Iris can read (not XML, not SOAP, no nsiHeader, missing elements)."""


# ------------------------------------------------------------------ building
def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def envelope(header: Header, body: etree._Element | None) -> bytes:
    """A SOAP envelope with the nsiHeader and one body element (None: an empty body)."""
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap=NSMAP)
    h = _sub(_sub(env, f"{{{SOAP}}}Header"), f"{{{HEADERS}}}nsiHeader")
    _sub(h, "protocolVersion", header.protocol_version)
    _sub(h, "correlationId", header.correlation_id)
    _sub(h, "requesterNSA", header.requester_nsa)
    _sub(h, "providerNSA", header.provider_nsa)
    if header.reply_to:
        _sub(h, "replyTo", header.reply_to)
    b = _sub(env, f"{{{SOAP}}}Body")
    if body is not None:
        b.append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _el(operation: str) -> etree._Element:
    return etree.Element(f"{{{CTYPES}}}{operation}", nsmap={"type": CTYPES})


def _criteria(parent: etree._Element, c: Criteria, tag: str = "criteria") -> None:
    crit = _sub(parent, tag, version=str(c.version))
    schedule = _sub(crit, "schedule")
    _sub(schedule, "startTime", xml_time(c.start))
    _sub(schedule, "endTime", xml_time(c.end))
    _sub(crit, "serviceType", c.service_type)
    p2ps = _sub(crit, f"{{{P2P}}}p2ps")
    _sub(p2ps, "capacity", str(c.capacity_mbps))
    _sub(p2ps, "directionality", "Bidirectional")
    _sub(p2ps, "symmetricPath", "true")
    _sub(p2ps, "sourceSTP", c.source_stp)
    _sub(p2ps, "destSTP", c.dest_stp)


def reserve(header: Header, criteria: Criteria, *, global_reservation_id: str | None = None,
            description: str | None = None, connection_id: str | None = None) -> bytes:
    el = _el("reserve")
    if connection_id:
        _sub(el, "connectionId", connection_id)
    if global_reservation_id:
        _sub(el, "globalReservationId", global_reservation_id)
    if description:
        _sub(el, "description", description)
    _criteria(el, criteria)
    return envelope(header, el)


def generic(header: Header, operation: str, connection_id: str) -> bytes:
    """reserveCommit, reserveAbort, provision, release, terminate (a request), or a confirmation
    of one (reserveCommitConfirmed, ...): the connectionId alone."""
    el = _el(operation)
    _sub(el, "connectionId", connection_id)
    return envelope(header, el)


def query_summary_sync(header: Header, connection_ids: list[str]) -> bytes:
    el = _el("querySummarySync")
    for c in connection_ids:
        _sub(el, "connectionId", c)
    return envelope(header, el)


def reserve_response(header: Header, connection_id: str) -> bytes:
    el = _el("reserveResponse")
    _sub(el, "connectionId", connection_id)
    return envelope(header, el)


def acknowledgment(header: Header) -> bytes:
    return envelope(header, _el("acknowledgment"))


def reserve_confirmed(header: Header, connection_id: str, criteria: Criteria, *,
                      global_reservation_id: str | None = None, description: str | None = None) -> bytes:
    el = _el("reserveConfirmed")
    _sub(el, "connectionId", connection_id)
    if global_reservation_id:
        _sub(el, "globalReservationId", global_reservation_id)
    if description:
        _sub(el, "description", description)
    _criteria(el, criteria)
    return envelope(header, el)


def _states(parent: etree._Element, s: States) -> None:
    el = _sub(parent, "connectionStates")
    _sub(el, "reservationState", s.reservation)
    _sub(el, "provisionState", s.provision)
    _sub(el, "lifecycleState", s.lifecycle)
    _data_plane(el, s.active, s.version, s.consistent)


def _data_plane(parent: etree._Element, active: bool, version: int, consistent: bool) -> None:
    dp = _sub(parent, "dataPlaneStatus")
    _sub(dp, "active", "true" if active else "false")
    _sub(dp, "version", str(version))
    _sub(dp, "versionConsistent", "true" if consistent else "false")


def _exception(parent: etree._Element, e: ServiceException, tag: str = "serviceException") -> None:
    el = _sub(parent, tag)
    _sub(el, "nsaId", e.nsa_id)
    if e.connection_id:
        _sub(el, "connectionId", e.connection_id)
    if e.service_type:
        _sub(el, "serviceType", e.service_type)
    _sub(el, "errorId", e.error_id)
    _sub(el, "text", e.text)


def failed(header: Header, operation: str, connection_id: str, states: States, e: ServiceException) -> bytes:
    """reserveFailed or reserveCommitFailed."""
    el = _el(operation)
    _sub(el, "connectionId", connection_id)
    _states(el, states)
    _exception(el, e)
    return envelope(header, el)


def fault(header: Header | None, e: ServiceException, faultstring: str | None = None) -> bytes:
    """A SOAP fault carrying NSI's serviceException: the synchronous refusal of a request."""
    env = (etree.fromstring(envelope(header, None)) if header is not None
           else etree.Element(f"{{{SOAP}}}Envelope", nsmap=NSMAP))
    body = env.find(f"{{{SOAP}}}Body")
    if body is None:
        body = _sub(env, f"{{{SOAP}}}Body")
    f = _sub(body, f"{{{SOAP}}}Fault")
    _sub(f, "faultcode", "soapenv:Server")
    _sub(f, "faultstring", faultstring or e.text)
    _exception(_sub(f, "detail"), e, f"{{{CTYPES}}}serviceException")
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _notification(operation: str, connection_id: str, notification_id: int, at: float) -> etree._Element:
    el = _el(operation)
    _sub(el, "connectionId", connection_id)
    _sub(el, "notificationId", str(notification_id))
    _sub(el, "timeStamp", xml_time(at))
    return el


def data_plane_state_change(header: Header, connection_id: str, notification_id: int, at: float, *,
                            active: bool, version: int, consistent: bool = True) -> bytes:
    el = _notification("dataPlaneStateChange", connection_id, notification_id, at)
    _data_plane(el, active, version, consistent)
    return envelope(header, el)


def reserve_timeout(header: Header, connection_id: str, notification_id: int, at: float, *,
                    timeout_s: int, provider_nsa: str) -> bytes:
    el = _notification("reserveTimeout", connection_id, notification_id, at)
    _sub(el, "timeoutValue", str(timeout_s))
    _sub(el, "originatingConnectionId", connection_id)
    _sub(el, "originatingNSA", provider_nsa)
    return envelope(header, el)


def error_event(header: Header, connection_id: str, notification_id: int, at: float, *, event: str,
                provider_nsa: str, exception: ServiceException | None = None) -> bytes:
    el = _notification("errorEvent", connection_id, notification_id, at)
    _sub(el, "event", event)
    _sub(el, "originatingConnectionId", connection_id)
    _sub(el, "originatingNSA", provider_nsa)
    if exception is not None:
        _exception(el, exception)
    return envelope(header, el)


def query_summary_sync_confirmed(header: Header, summaries: list[tuple[str, str, Criteria | None, States]]) -> bytes:
    """(connectionId, requesterNSA, criteria, states) per connection asked about; no criteria for
    a connection that has none left (never committed, its held version aborted or timed out)."""
    el = _el("querySummarySyncConfirmed")
    for cid, requester, c, s in summaries:
        r = _sub(el, "reservation")
        _sub(r, "connectionId", cid)
        if c is not None:
            _criteria(r, c)
        _sub(r, "requesterNSA", requester)
        _states(r, s)
    return envelope(header, el)


# ------------------------------------------------------------------ reading
def _text(el: etree._Element | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path, NSMAP)
    return found.text.strip() if found is not None and found.text is not None else None


def _need(el: etree._Element, path: str) -> str:
    value = _text(el, path)
    if value is None:
        raise MessageError(f"{etree.QName(el).localname} has no {path}")
    return value


def _read_exception(el: etree._Element | None) -> ServiceException | None:
    if el is None:
        return None
    return ServiceException(nsa_id=_text(el, "nsaId") or "", error_id=_text(el, "errorId") or "",
                            text=_text(el, "text") or "", connection_id=_text(el, "connectionId"),
                            service_type=_text(el, "serviceType"))


def _read_criteria(el: etree._Element | None) -> Criteria | None:
    if el is None:
        return None
    p2ps = el.find("p2p:p2ps", NSMAP)
    if p2ps is None:
        raise MessageError("the criteria have no p2p:p2ps")
    start, end = _text(el, "schedule/startTime"), _text(el, "schedule/endTime")
    return Criteria(version=int(el.get("version", "1")), start=parse_time(start) if start else 0.0,
                    end=parse_time(end) if end else float("inf"), capacity_mbps=int(_need(p2ps, "capacity")),
                    source_stp=_need(p2ps, "sourceSTP"), dest_stp=_need(p2ps, "destSTP"),
                    service_type=_text(el, "serviceType") or "")


def _bool(text: str | None) -> bool | None:
    return None if text is None else text in ("true", "1")


def parse(data: bytes) -> Message:
    """Read an NSI SOAP message; MessageError if it is not one."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False))
    except etree.XMLSyntaxError as e:
        raise MessageError(f"not XML: {e}") from None
    if root.tag != f"{{{SOAP}}}Envelope":
        raise MessageError("not a SOAP 1.1 envelope")
    h = root.find("soapenv:Header/header:nsiHeader", NSMAP)
    body = root.find("soapenv:Body", NSMAP)
    if body is None or len(body) == 0:
        raise MessageError("the SOAP body is empty")
    el = body[0]
    if h is None and el.tag != f"{{{SOAP}}}Fault":
        raise MessageError("no nsiHeader")
    header = (Header(requester_nsa=_need(h, "requesterNSA"), provider_nsa=_need(h, "providerNSA"),
                     correlation_id=_need(h, "correlationId"), reply_to=_text(h, "replyTo"),
                     protocol_version=_need(h, "protocolVersion"))
              if h is not None else Header("", "", "", None, ""))
    op = etree.QName(el).localname
    m = Message(header=header, operation=op, connection_id=_text(el, "connectionId"))
    if el.tag == f"{{{SOAP}}}Fault":
        detail = el.find("detail")
        exc = None
        if detail is not None:
            exc = _read_exception(detail.find("type:serviceException", NSMAP)
                                  if detail.find("type:serviceException", NSMAP) is not None
                                  else detail.find("ftypes:serviceException", NSMAP))
        m.exception = exc or ServiceException("", "00500", _text(el, "faultstring") or "SOAP fault")
        return m
    if el.tag != f"{{{CTYPES}}}{op}":
        raise MessageError(f"{el.tag} is not an NSI connection message")
    m.exception = _read_exception(el.find("serviceException"))
    m.criteria = _read_criteria(el.find("criteria"))
    m.global_reservation_id, m.description = _text(el, "globalReservationId"), _text(el, "description")
    dp = el.find("dataPlaneStatus")
    if dp is not None:
        m.active, m.consistent = _bool(_text(dp, "active")), _bool(_text(dp, "versionConsistent"))
        m.data_plane_version = int(_text(dp, "version") or 0)
    if op in NOTIFICATIONS and _text(el, "notificationId"):
        m.notification_id = int(_need(el, "notificationId"))
    if op == "reserveTimeout":
        m.timeout_s = int(_need(el, "timeoutValue"))
    if op == "errorEvent":
        m.event = _need(el, "event")
    if op == "querySummarySync":
        m.connection_ids = [c.text.strip() for c in el.findall("connectionId") if c.text]
    if op == "querySummarySyncConfirmed":
        for r in el.findall("reservation"):
            crit = _read_criteria(r.find("criteria"))
            m.summaries.append({"connection_id": _need(r, "connectionId"),
                                "reservation_state": _text(r, "connectionStates/reservationState"),
                                "provision_state": _text(r, "connectionStates/provisionState"),
                                "lifecycle_state": _text(r, "connectionStates/lifecycleState"),
                                "active": _bool(_text(r, "connectionStates/dataPlaneStatus/active")),
                                "criteria": crit})
    return m
