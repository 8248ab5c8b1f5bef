"""The agent's end of the control channel: TLS that requires the coordinator's certificate, and
a host certificate rotated without a restart.

Every connection must present a client certificate that the CA in ``ca.crt`` signed, and
OpenSSL's default purpose check on a server refuses a client certificate whose
ExtendedKeyUsage lacks clientAuth: the CA gives clientAuth to the coordinator's certificate
only, so another host's certificate (serverAuth only) cannot drive this agent (the tests check
that this still holds). The handshake happens before HTTP, so a connection without the
coordinator's certificate never reaches a route, and a plain-HTTP request gets no HTTP answer.

:meth:`ServerTls.reload` loads ``host.crt`` and ``host.key`` into the live context when they
change (``iris agent enroll`` again): connections made afterwards present the new certificate,
established ones and the data plane are untouched. The pair is copied, checked in a context
of its own, and only then loaded, so a pair half-written or mismatched never replaces a good
one.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from iris_haas.contract import names

log = logging.getLogger("iris.agent.tls")


class ServerTls:
    def __init__(self, tls_dir: str | Path):
        self.dir = Path(tls_dir)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(self.dir / names.CA_CERT)
        self._loaded = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reload()

    def _pair(self) -> tuple[bytes, bytes]:
        return (self.dir / names.HOST_CERT).read_bytes(), (self.dir / names.HOST_KEY).read_bytes()

    @property
    def name(self) -> str:
        """The host name the certificate gives (its CN)."""
        cert = x509.load_pem_x509_certificate(self._pair()[0])
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def reload(self) -> bool:
        """Load the certificate and key into the live context if they changed; whether they did.
        Raises (``OSError``, ``ssl.SSLError``) on a pair that does not load, leaving the context as it was."""
        with self._lock:
            cert, key = self._pair()
            if cert + key == self._loaded:
                return False
            with tempfile.TemporaryDirectory(dir=self.dir, prefix=".load-") as tmp:
                pem = Path(tmp) / "pair.pem"
                pem.touch(mode=0o600)
                pem.write_bytes(cert + key)
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pem)  # a mismatched pair stops here
                self.context.load_cert_chain(pem)
            first = not self._loaded
            self._loaded = cert + key
        if not first:
            log.info("loaded a new certificate from %s", self.dir)
        return True

    def check(self) -> None:
        """:meth:`reload`, logging what fails (a pair caught half-written is tried again next time)."""
        try:
            self.reload()
        except (OSError, ssl.SSLError) as e:
            log.warning("keeping the current certificate: %s in %s does not load (%s)", names.HOST_CERT, self.dir, e)

    def watch(self, every_s: float) -> None:
        """:meth:`check` every ``every_s`` seconds, in a thread, until :meth:`close`."""
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.check()

        threading.Thread(target=loop, name="iris-tls-watch", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
