"""httpx client for an agent: mutual TLS, optionally connecting from inside a network namespace.

An agent is reached at an ``https://`` URL with a :class:`ClientTls`: the client presents the
coordinator's certificate and accepts only a server certificate of the CA that names ``node``,
the host it means to talk to (the name goes in SNI and is checked against the certificate,
whatever address the URL holds), so whoever answers at a host's address cannot pose as that
host. A plain ``http://`` URL is for an agent run with ``--insecure-http`` (development only):
a bearer token, nothing verified; the client never speaks plain HTTP when given TLS.

The agents listen on the HaaS control network, which in the lab exists only inside namespaces.
With ``netns=...`` the client opens its TCP connections inside that namespace (a short-lived
thread enters it with ``setns``; the socket it makes stays in that namespace), so a coordinator
running on the host reaches the agents without any address or route on the host itself.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

from iris_haas.contract import names
from iris_haas.contract.errors import IrisError
from iris_haas.contract.ops import DesiredState
from iris_haas.linux.netns import socket_in_netns


class _NetnsBackend(httpcore.SyncBackend):
    def __init__(self, netns: str):
        self.netns = netns

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        s = socket_in_netns(self.netns)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except OSError as e:
            s.close()
            raise httpcore.ConnectError(str(e)) from e
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        from httpcore._backends.sync import SyncStream

        return SyncStream(s)


class AgentError(IrisError):
    status, type = 502, "AgentError"


@dataclass(frozen=True)
class ClientTls:
    """What a client of the agents trusts (``ca``: the CA whose host certificates it accepts) and
    presents (``cert``/``key``: the coordinator's; none, or another's, to see an agent refuse it)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def coordinator(cls, tls_dir: str | Path) -> ClientTls:
        """The coordinator's files in ``tls_dir`` (the CA's directory, or a copy of its three files)."""
        d = Path(tls_dir)
        return cls(d / names.CA_CERT, d / names.COORDINATOR_CERT, d / names.COORDINATOR_KEY)

    @classmethod
    def host(cls, tls_dir: str | Path) -> ClientTls:
        """A host's own files (an agent's ``--tls-dir``), presented as a client's: agents refuse them."""
        d = Path(tls_dir)
        return cls(d / names.CA_CERT, d / names.HOST_CERT, d / names.HOST_KEY)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


class AgentClient:
    """``AgentClient(url, tls, node=...)`` for an agent over mutual TLS (``node``: the name its
    certificate must give); ``AgentClient(url, token=...)`` for one run with ``--insecure-http``."""

    def __init__(self, url: str, tls: ClientTls | None = None, *, node: str | None = None, token: str | None = None,
                 netns: str | None = None, timeout: float = 60.0):
        ctx, headers = None, {}
        if url.startswith("https://"):
            if tls is None or not node:
                raise AgentError(f"{url}: an agent over TLS needs the coordinator's certificate and the host's name")
            ctx = tls.context()
        elif url.startswith("http://"):
            if tls is not None or not token:
                raise AgentError(f"{url}: plain HTTP to an agent is for --insecure-http agents only, with its token")
            headers = {"Authorization": f"Bearer {token}"}
        else:
            raise AgentError(f"{url}: not an agent URL (https://HOST:PORT)")
        self.node = node
        transport = httpx.HTTPTransport(verify=ctx or True)
        if netns:
            # httpx has no public hook for the socket factory; its pool takes a network backend
            # (the TLS upgrade then happens on the stream it returns)
            transport._pool = httpcore.ConnectionPool(ssl_context=ctx, network_backend=_NetnsBackend(netns))
        self.http = httpx.Client(base_url=url, transport=transport, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        return self._send(method, path, **kw).json()

    def _send(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            # the name the server's certificate must give, whatever address the URL holds
            r = self.http.request(method, path, extensions={"sni_hostname": self.node} if self.node else None, **kw)
        except httpx.HTTPError as e:
            raise AgentError(f"{method} {path}: {e}") from e
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"type": "AgentError", "message": r.text}
            extra = {"held": body["current"]} if r.status_code == 409 and "current" in body else {}
            raise AgentError(f"{method} {path}: {r.status_code} {body.get('type')}: {body.get('message')}",
                             status_code=r.status_code, **extra)
        return r

    def peer_certificate(self) -> bytes:
        """The certificate (DER) the agent presents on this client's connection (a new client: a new one)."""
        try:
            with self.http.stream("GET", "/v1/health", extensions={"sni_hostname": self.node} if self.node else None) as r:
                tls = r.extensions["network_stream"].get_extra_info("ssl_object")
                return tls.getpeercert(True)  # the low-level socket: no keywords
        except httpx.HTTPError as e:
            raise AgentError(f"GET /v1/health: {e}") from e

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def state(self) -> dict:
        return self._call("GET", "/v1/state")

    def desired(self) -> dict:
        return self._call("GET", "/v1/desired")

    def put(self, desired: DesiredState) -> dict:
        return self._call("PUT", "/v1/desired", content=desired.model_dump_json(),
                          headers={"Content-Type": "application/json"})

    def apply(self) -> dict:
        return self._call("POST", "/v1/apply")

    def metrics(self) -> str:
        """The agent's Prometheus metrics (text exposition format), as a scrape reads them."""
        return self._send("GET", "/metrics").text
