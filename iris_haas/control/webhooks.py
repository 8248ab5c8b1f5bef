"""Tenants' webhooks: every event of a tenant's reservations is POSTed to the URLs it registered.

Delivery runs from the database, never from the transaction that wrote the event: each webhook
keeps the cursor of the last event its receiver took (``Webhook.cursor``), so a coordinator that
restarts or a receiver that is down loses nothing; the next delivery starts after the cursor. A
failure waits, doubling each time (``BACKOFF_S`` up to ``MAX_BACKOFF_S``). The worker is a thread
of its own that only the leader runs (see :mod:`iris_haas.control.lease`), so each event is sent
by one coordinator; a transition or an API call never waits for a receiver.

Receivers are the tenants', and a tenant may be hostile: its URL is resolved at each delivery and
refused when an address is not public (the control network, loopback, the agents), unless the
operator allows it; the request goes to the address that was checked (no second look-up to
rebind), follows no redirect, and its answer's body is never read.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select, update

from iris_haas import __version__
from iris_haas.contract.errors import AlreadyExists, NotFound
from iris_haas.control.events import public_event, tenant_events
from iris_haas.store.db import Database
from iris_haas.store.models import Event, Reservation, Tenant, Webhook

log = logging.getLogger("iris.webhooks")

MAX_PER_TENANT = 8
BATCH = 100  # events read per look; a delivery goes on until its receiver is up to date
BACKOFF_S, MAX_BACKOFF_S = 1.0, 300.0
TIMEOUT_S = 5.0  # connect, send, and wait for the answer's headers, each


def signature(secret: str, body: bytes) -> str:
    """``X-Iris-Signature``: the receiver recomputes it over the body it got, with its secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    def __init__(self, db: Database, *, allow_private: bool = False, clock: Callable[[], float] = time.time):
        self.db, self.allow_private, self.clock = db, allow_private, clock

    # ------------------------------------------------------------ what tenants manage
    @staticmethod
    def _tenant(s, name: str, tenant_id: int | None) -> Tenant:
        """The named tenant, when the caller may see it: the admin any, a tenant only itself."""
        t = s.scalar(select(Tenant).where(Tenant.name == name))
        if t is None or (tenant_id is not None and t.id != tenant_id):
            raise NotFound(f"no tenant named {name}")
        return t

    def create(self, name: str, tenant_id: int | None, url: str) -> tuple[Webhook, str]:
        """A webhook for the events written from now on, and its secret (Iris shows it once)."""
        secret = secrets.token_hex(32)
        with self.db.transaction() as s:
            t = self._tenant(s, name, tenant_id)
            n = s.scalar(select(func.count()).select_from(Webhook).where(Webhook.tenant_id == t.id)) or 0
            if n >= MAX_PER_TENANT:
                raise AlreadyExists(f"tenant {name} has {n} webhooks, the most it may; remove one first")
            w = Webhook(tenant_id=t.id, url=url, secret=secret, created_at=self.clock(),
                        cursor=s.scalar(select(func.max(Event.seq))) or 0, attempts=0, next_try=0.0)
            s.add(w)
            s.flush()
        return w, secret

    def list(self, name: str, tenant_id: int | None) -> list[Webhook]:
        with self.db.transaction() as s:
            t = self._tenant(s, name, tenant_id)
            return list(s.scalars(select(Webhook).where(Webhook.tenant_id == t.id).order_by(Webhook.id)))

    def delete(self, name: str, tenant_id: int | None, wid: int) -> None:
        with self.db.transaction() as s:
            t = self._tenant(s, name, tenant_id)
            w = s.get(Webhook, wid)
            if w is None or w.tenant_id != t.id:
                raise NotFound(f"tenant {name} has no webhook {wid}")
            s.delete(w)

    # ------------------------------------------------------------ delivery
    def due(self) -> builtins.list[tuple[int, int]]:
        """(webhook, tenant) of each webhook whose retry time has come and that is behind."""
        pending = (select(Event.id).join(Reservation, Reservation.id == Event.reservation_id)
                   .where(Reservation.tenant_id == Webhook.tenant_id, Event.seq > Webhook.cursor).exists())
        with self.db.transaction() as s:
            return [(w, t) for w, t in s.execute(select(Webhook.id, Webhook.tenant_id)
                                                 .where(Webhook.next_try <= self.clock(), pending))]

    def deliver(self, wid: int, stopping: Callable[[], bool] = lambda: False) -> int:
        """Send the webhook's receiver every event after its cursor, one POST each, in order,
        until it is up to date, fails or ``stopping()``; returns how many it took."""
        sent = 0
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as http:
            while not stopping():
                with self.db.transaction() as s:
                    w = s.get(Webhook, wid)
                    if w is None:  # removed meanwhile
                        return sent
                    url, secret, cursor = w.url, w.secret, w.cursor
                    events = [(e.seq or 0, public_event(e)) for e in tenant_events(s, w.tenant_id, cursor, BATCH)]
                if not events:
                    return sent
                for seq, body in events:
                    if stopping():
                        return sent
                    error = self._post(http, url, secret, seq, json.dumps(body, separators=(",", ":")).encode())
                    if error is not None:
                        self._failed(wid, error)
                        return sent
                    with self.db.transaction() as s:
                        s.execute(update(Webhook).where(Webhook.id == wid, Webhook.cursor < seq).values(
                            cursor=seq, attempts=0, next_try=0.0, last_error=None, delivered_at=self.clock()))
                    sent += 1
        return sent

    def _failed(self, wid: int, error: str) -> None:
        with self.db.transaction() as s:
            w = s.get(Webhook, wid)
            if w is not None:
                w.attempts += 1
                w.next_try = self.clock() + min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (w.attempts - 1))
                w.last_error = error[:256]

    def _post(self, http: httpx.Client, url: str, secret: str, seq: int, body: bytes) -> str | None:
        """One delivery; None when the receiver answered 2xx, else why not (in Iris's words only)."""
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            return "the URL cannot be parsed"
        host = target.host
        try:
            infos = socket.getaddrinfo(host, target.port or (443 if target.scheme == "https" else 80),
                                       type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return f"cannot resolve {host}"
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            return f"cannot resolve {host}"
        if not self.allow_private and not all(a.is_global for a in addresses):
            return f"{host} resolves to an address that is not public; refused"
        headers = {"Content-Type": "application/json", "User-Agent": f"iris/{__version__}",
                   "Host": target.netloc.decode("ascii"), "X-Iris-Event-Id": str(seq),
                   "X-Iris-Signature": signature(secret, body)}
        request = http.build_request("POST", target.copy_with(host=str(addresses[0])), content=body,
                                     headers=headers, extensions={"sni_hostname": host})
        try:
            response = http.send(request, stream=True)
            response.close()  # the answer's body is the receiver's business
        except httpx.HTTPError as e:
            return f"{type(e).__name__} from {host}"
        if not 200 <= response.status_code < 300:
            return f"{host} answered HTTP {response.status_code}"
        return None


class WebhookWorker:
    """Delivers in the background: woken by each commit that wrote events (and every ``interval``
    for the retries and other coordinators' events), one delivery at a time per tenant, so a
    receiver that is slow holds back its own tenant's webhooks only."""

    def __init__(self, hooks: Webhooks, leads: Callable[[], bool], interval: float = 1.0, workers: int = 8):
        self.hooks, self.leads, self.interval = hooks, leads, interval
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iris-webhook")
        self._busy: set[int] = set()  # tenants with a delivery running
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iris-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.hooks.db.bell.ring()  # wake the loop
        self._thread.join(timeout=10)
        # a delivery stops before its next POST: none goes on after the coordinator closed
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        bell = self.hooks.db.bell
        while not self._stop.is_set():
            seen = bell.rung
            try:
                if self.leads():
                    for wid, tenant in self.hooks.due():
                        with self._lock:
                            if tenant in self._busy:
                                continue
                            self._busy.add(tenant)
                        self._pool.submit(self._deliver, wid, tenant)
            except Exception:  # the database is away: the next round tries again
                log.exception("webhook round failed")
            bell.wait(seen, self.interval)

    def _deliver(self, wid: int, tenant: int) -> None:
        try:
            self.hooks.deliver(wid, self._stop.is_set)
        except Exception:
            log.exception("webhook %s: delivery failed", wid)
        finally:
            with self._lock:
                self._busy.discard(tenant)  # its other webhooks go at the next round
