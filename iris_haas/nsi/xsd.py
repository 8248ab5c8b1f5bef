"""Validate NSI messages against the OGF schemas (the WSDL's XSDs, kept outside the project).

One schema imports them all (SOAP envelope, NSI headers, connection, framework and service types,
point-to-point); a message is valid when its envelope is, and its nsiHeader and body element are
too, each checked against its own declaration (the envelope's wildcards alone would let an
unknown element pass).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from iris_haas.nsi.messages import CTYPES, FTYPES, HEADERS, P2P, SOAP

_FILES = {
    SOAP: "envelope.xsd",
    HEADERS: "ogf_nsi_framework_headers_v2_0.xsd",
    FTYPES: "ogf_nsi_framework_types_v2_0.xsd",
    CTYPES: "ogf_nsi_connection_types_v2_0.xsd",
    P2P: "ogf_nsi_services_p2p_v2_0.xsd",
}


class Validator:
    def __init__(self, schema_dir: Path):
        d = Path(schema_dir).resolve()
        imports = "".join(f'<xsd:import namespace="{ns}" schemaLocation="{(d / f).as_uri()}"/>'
                          for ns, f in _FILES.items())
        doc = etree.fromstring(f'<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema">{imports}</xsd:schema>',
                               base_url=(d / "all.xsd").as_uri())
        self.schema = etree.XMLSchema(doc)
        self._lock = threading.Lock()  # a schema's validation (and its error log) is not thread-safe

    def errors(self, data: bytes) -> list[str]:
        """Everything invalid in one SOAP message (empty: valid)."""
        root = etree.fromstring(data)
        parts = [root]
        header = root.find(f"{{{SOAP}}}Header")
        body = root.find(f"{{{SOAP}}}Body")
        if header is not None:
            parts += list(header)
        if body is not None:
            parts += [el for el in body if el.tag != f"{{{SOAP}}}Fault"]
            for fault in body.iter(f"{{{SOAP}}}Fault"):
                detail = fault.find("detail")
                parts += list(detail) if detail is not None else []
        out = []
        with self._lock:
            for el in parts:
                if not self.schema.validate(etree.ElementTree(_copy(el))):
                    out += [f"{etree.QName(el).localname}: {e.message}" for e in self.schema.error_log]
        return out

    def check(self, data: bytes) -> None:
        errors = self.errors(data)
        if errors:
            raise AssertionError("invalid NSI message: " + "; ".join(errors) + "\n" + data.decode(errors="replace"))


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))
