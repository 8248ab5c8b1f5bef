"""httpx client for an agent, optionally connecting from inside a network namespace.

The agents listen on the HaaS control network, which in the lab exists only inside namespaces.
With ``netns=...`` the client opens its TCP connections inside that namespace (a short-lived
thread enters it with ``setns``; the socket it makes stays in that namespace), so a coordinator
running on the host reaches the agents without any address or route on the host itself.
"""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import httpx

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


class AgentClient:
    def __init__(self, url: str, token: str, netns: str | None = None, timeout: float = 60.0):
        transport = httpx.HTTPTransport()
        if netns:
            # httpx has no public hook for the socket factory; its pool takes a network backend
            transport._pool = httpcore.ConnectionPool(network_backend=_NetnsBackend(netns))
        self.http = httpx.Client(base_url=url, transport=transport, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method: str, path: str, **kw) -> Any:
        try:
            r = self.http.request(method, path, **kw)
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
        return r.json()

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
