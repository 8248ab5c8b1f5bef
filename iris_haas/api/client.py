"""A small client for the coordinator's API; errors become ``ApiError`` with the server's type and message."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, body: dict | None = None):
        super().__init__(f"{type_}: {message}")
        self.status, self.type, self.message, self.body = status, type_, message, body or {}


class Client:
    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0, transport=None,
                 ca_file: str | Path | None = None):
        """``ca_file``: the CA that signed an ``https://`` coordinator's certificate (default: the system's)."""
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._http = httpx.Client(base_url=self.url + "/v1", headers=headers, timeout=timeout, transport=transport,
                                  verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, **kw) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise self._unreachable(e) from None
        if r.status_code == 204:
            return None
        return self._body(r)

    def _unreachable(self, e: Exception) -> ApiError:
        return ApiError(0, "Unreachable", f"cannot reach the coordinator at {self.url} ({e}); is `iris serve` running?")

    @staticmethod
    def _body(r: httpx.Response) -> Any:
        try:
            body = r.json()
        except ValueError:
            body = {"type": "HTTPError", "message": r.text[:200]}
        if r.status_code >= 400:
            raise ApiError(r.status_code, body.get("type", "HTTPError"), body.get("message", ""), body)
        return body

    def follow(self, after: int = 0, *, idle_s: float = 60.0) -> Iterator[dict]:
        """Every event after the cursor ``after``, then each new one, for ever: the stream is
        opened again after the last event received whenever it ends, goes silent for ``idle_s``
        (heartbeats stop) or the coordinator is away for a while (a restart)."""
        last, away = after, 0.0
        while True:
            try:
                with connect_sse(self._http, "GET", "/events/stream", headers={"Last-Event-ID": str(last)},
                                 timeout=httpx.Timeout(self.timeout, read=idle_s)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        self._body(source.response)
                    away = 0.0
                    for sse in source.iter_sse():
                        if sse.data:
                            event = json.loads(sse.data)
                            last = event["cursor"]
                            yield event
            except httpx.TransportError as e:
                if away > self.timeout:
                    raise self._unreachable(e) from None
                time.sleep(1.0)
                away += 1.0

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw) -> Any:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.request("PATCH", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
