"""Iris as an NSI CS 2.0 requester: requests to a provider over SOAP/HTTP, answers by callback.

A request is posted to the provider, which acknowledges it at once (``reserveResponse`` with the
connectionId, or ``acknowledgment``) or refuses it (a SOAP fault); its outcome comes later, as a
callback to Iris's requester endpoint. A callback is matched to the request it answers by its
correlationId (unguessable, one per request) and its connectionId, never by arrival order, so
callbacks may come in any order and before the acknowledgment itself. Nothing waits longer than
``timeout_s``: a provider that does not answer fails the request with an error saying so.

Notifications (dataPlaneStateChange, reserveTimeout, errorEvent) answer no request: they are
acknowledged at once and handed to ``on_notification`` in a thread of their own, which may then
talk to the provider again without holding the provider's own call open.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from iris_haas.agent.client import _NetnsBackend
from iris_haas.nsi import messages as m

log = logging.getLogger("iris.nsi")


class NsiError(Exception):
    """The provider refused (a fault, a *Failed) or did not answer in time."""

    def __init__(self, message: str, exception: m.ServiceException | None = None, connection_id: str | None = None):
        super().__init__(message)
        self.message, self.exception = message, exception
        self.connection_id = connection_id  # the connection the provider made, if it made one


@dataclass(frozen=True)
class Provider:
    """Where a link's provider is and who it is."""

    url: str
    nsa: str


class _Waiter:
    def __init__(self, expect: set[str]):
        self.expect = expect
        self.connection_id: str | None = None
        self.messages: list[m.Message] = []
        self.ready = threading.Condition()


class Requester:
    def __init__(self, nsa: str, reply_url: str, *, timeout_s: float = 10.0, netns: str | None = None,
                 tap: Callable[[str, bytes], None] | None = None):
        """``netns``: reach the providers from inside this network namespace (the lab's control
        network, as for the agents). ``tap``: called with ("sent" | "received", message) for
        every message, both ways."""
        self.nsa, self.reply_url, self.timeout_s = nsa, reply_url, timeout_s
        self.tap = tap
        self.on_notification: Callable[[m.Message, str], None] | None = None
        self._waiting: dict[str, _Waiter] = {}
        self._lock = threading.Lock()
        transport = httpx.HTTPTransport()
        if netns:
            transport._pool = httpcore.ConnectionPool(network_backend=_NetnsBackend(netns))
        self._http = httpx.Client(timeout=timeout_s, trust_env=False, transport=transport)
        self._notify = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iris-nsi-notify")

    def close(self) -> None:
        self._notify.shutdown(wait=True)
        self._http.close()

    def _seen(self, direction: str, data: bytes) -> None:
        if self.tap is not None:
            self.tap(direction, data)

    # ------------------------------------------------------------ requests
    def _header(self, provider: Provider) -> m.Header:
        return m.Header(self.nsa, provider.nsa, reply_to=self.reply_url)

    def _call(self, provider: Provider, operation: str, header: m.Header, body: bytes, expect: set[str],
              connection_id: str | None, timeout_s: float | None) -> m.Message:
        """Post one request and wait for the callback answering it (one of ``expect``, or a failure)."""
        bound = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + bound
        waiter = _Waiter(expect | set(m.FAILURES))
        waiter.connection_id = connection_id
        with self._lock:
            self._waiting[header.correlation_id] = waiter
        try:
            self._seen("sent", body)
            try:
                r = self._http.post(provider.url, content=body, timeout=bound,
                                    headers={"Content-Type": m.CONTENT_TYPE, "SOAPAction": m.soap_action(operation)})
            except httpx.TimeoutException:
                raise NsiError(f"NSI provider {provider.nsa} did not acknowledge {operation} within {bound:g} s") from None
            except httpx.HTTPError as e:
                raise NsiError(f"NSI provider {provider.nsa} unreachable for {operation}: {e}") from None
            self._seen("received", r.content)
            try:
                ack = m.parse(r.content)
            except m.MessageError as e:
                raise NsiError(f"NSI provider {provider.nsa} answered {operation} with HTTP {r.status_code}, "
                               f"not an NSI message ({e})") from None
            if ack.operation == "Fault":
                raise NsiError(f"NSI provider {provider.nsa} refused {operation}: {ack.exception}", ack.exception)
            if ack.operation not in ("reserveResponse", "acknowledgment"):
                raise NsiError(f"NSI provider {provider.nsa} answered {operation} with {ack.operation}")
            with waiter.ready:
                if ack.connection_id:
                    waiter.connection_id = ack.connection_id
                while True:
                    answer = next((x for x in waiter.messages if x.connection_id == waiter.connection_id), None)
                    if answer is not None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NsiError(f"NSI provider {provider.nsa} did not confirm {operation} within {bound:g} s",
                                       connection_id=waiter.connection_id)
                    waiter.ready.wait(left)
        finally:
            with self._lock:
                self._waiting.pop(header.correlation_id, None)
        if answer.operation in m.FAILURES:
            raise NsiError(f"NSI provider {provider.nsa} refused {operation}: {answer.exception}", answer.exception,
                           answer.connection_id)
        return answer

    def reserve(self, provider: Provider, criteria: m.Criteria, *, global_reservation_id: str,
                description: str | None = None, connection_id: str | None = None,
                timeout_s: float | None = None) -> m.Message:
        """reserve (a new connection, or a modify of ``connection_id``) -> reserveConfirmed."""
        h = self._header(provider)
        body = m.reserve(h, criteria, global_reservation_id=global_reservation_id, description=description,
                         connection_id=connection_id)
        return self._call(provider, "reserve", h, body, {"reserveConfirmed"}, connection_id, timeout_s)

    def request(self, provider: Provider, operation: str, connection_id: str,
                timeout_s: float | None = None) -> m.Message:
        """reserveCommit, reserveAbort, provision, release, terminate -> its *Confirmed."""
        h = self._header(provider)
        return self._call(provider, operation, h, m.generic(h, operation, connection_id),
                          {f"{operation}Confirmed"}, connection_id, timeout_s)

    def query(self, provider: Provider, connection_ids: list[str]) -> m.Message:
        """querySummarySync: the provider's view of these connections, answered in the response."""
        h = self._header(provider)
        body = m.query_summary_sync(h, connection_ids)
        self._seen("sent", body)
        try:
            r = self._http.post(provider.url, content=body, headers={
                "Content-Type": m.CONTENT_TYPE, "SOAPAction": m.soap_action("querySummarySync")})
        except httpx.HTTPError as e:
            raise NsiError(f"NSI provider {provider.nsa} unreachable for querySummarySync: {e}") from None
        self._seen("received", r.content)
        answer = m.parse(r.content)
        if answer.operation == "Fault":
            raise NsiError(f"NSI provider {provider.nsa} refused querySummarySync: {answer.exception}",
                           answer.exception)
        return answer

    # ------------------------------------------------------------ callbacks
    def deliver(self, data: bytes, peer: str | None) -> bytes:
        """One callback from a provider (the requester endpoint's body): the acknowledgment to
        answer with. MessageError if it is not an NSI message addressed to this requester."""
        self._seen("received", data)
        msg = m.parse(data)
        if msg.operation == "Fault" or msg.header.requester_nsa != self.nsa:
            raise m.MessageError(f"not a callback for requester {self.nsa}")
        with self._lock:
            waiter = self._waiting.get(msg.header.correlation_id)
        if waiter is not None and msg.operation in waiter.expect:
            with waiter.ready:
                waiter.messages.append(msg)
                waiter.ready.notify_all()
        elif msg.operation in m.NOTIFICATIONS and self.on_notification is not None:
            self._notify.submit(self._notified, msg, peer or "")
        else:
            log.info("NSI %s (correlationId %s) answers nothing waiting", msg.operation, msg.header.correlation_id)
        ack = m.acknowledgment(msg.header.answer(m.REQUESTER_PROTOCOL))
        self._seen("sent", ack)
        return ack

    def _notified(self, msg: m.Message, peer: str) -> None:
        try:
            assert self.on_notification is not None
            self.on_notification(msg, peer)
        except Exception:
            log.exception("NSI %s for %s not applied", msg.operation, msg.connection_id)


def from_provider(peer: str, provider_url: str) -> bool:
    """Whether a callback's peer address is the provider's host (its URL's address, or one its
    name resolves to): a tenant cannot pose as the provider to forge a notification."""
    host = urlsplit(provider_url).hostname or ""
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(str(a[4][0])) for a in socket.getaddrinfo(host, None)}
        except OSError:
            return False
    try:
        return ipaddress.ip_address(peer) in addresses
    except ValueError:
        return False
