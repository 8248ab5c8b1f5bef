"""The event feed (one page at a time, or as a Server-Sent Events stream) and tenants' webhooks.

A tenant sees only its own reservations' events, the admin every event; the page, the stream
and the webhooks read the same query (``control.events``), so they show the same events."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Path, Query, Request, status
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from iris_haas.api import schemas
from iris_haas.api.deps import CoordinatorDep, PrincipalDep
from iris_haas.contract.errors import TooManyRequests
from iris_haas.control.engine import Coordinator
from iris_haas.control.events import public_event
from iris_haas.control.schemas import from_epoch
from iris_haas.control.webhooks import Webhooks
from iris_haas.store.models import Webhook

events = APIRouter(prefix="/events", tags=["events"])
webhooks = APIRouter(prefix="/tenants/{name}/webhooks", tags=["webhooks"])

CURSOR_MAX = 2**63 - 1  # the column is a BigInteger
Cursor = Annotated[int, Query(ge=0, le=CURSOR_MAX, description="resume after this event's cursor (0: from the "
                                                               "first event)")]
# one event of the stream (OpenAPI 3.1: the schema of a text/event-stream describes each event)
SSE_EVENT = {"type": "object", "required": ["data", "id"], "properties": {
    "data": {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"$ref": "#/components/schemas/FeedEvent"}},
    "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event's cursor"},
    "event": {"type": "string"}}}
PAGE = 100  # events read per look by a stream
STREAM_POLL_S = 2.0  # a stream looks this often for events other coordinators wrote
MAX_STREAMS = 8  # per tenant (and for the admin): each stream costs a look every STREAM_POLL_S


@events.get("", response_model=schemas.EventPage, summary="Events after a cursor, oldest first: a tenant's own "
            "reservations' events; the admin's, every reservation's")
def feed(coord: CoordinatorDep, who: PrincipalDep, after: Cursor = 0,
         limit: Annotated[int, Query(ge=1, le=1000, description="at most this many events")] = 100):
    page = [schemas.FeedEvent(**public_event(e)) for e in coord.feed(who.scope, after, limit)]
    return schemas.EventPage(events=page, next=page[-1].cursor if page else after)


class StreamSlots:
    """How many streams each principal has open; past ``MAX_STREAMS`` a new one is a 429."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Callable[[], None]:
        with self._lock:
            if self._open.get(key, 0) >= MAX_STREAMS:
                raise TooManyRequests(f"{MAX_STREAMS} event streams are open already; close one", retry_after_s=5)
            self._open[key] = self._open.get(key, 0) + 1

        def give_back() -> None:
            with self._lock:
                self._open[key] -= 1
                if not self._open[key]:
                    del self._open[key]

        return give_back


class _Stream(EventSourceResponse):
    """Gives its slot back however the stream ends (end of its time, the client gone, HEAD)."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], give_back: Callable[[], None], **kw) -> None:
        super().__init__(content, **kw)
        self._give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._give_back()


async def _events(coord: Coordinator, scope: int | None, after: int, lasts_s: float) -> AsyncIterator[ServerSentEvent]:
    """Every event after ``after``, then each new one as it is written, for ``lasts_s``. Each look
    is a short transaction of its own in a worker thread; between looks the stream holds nothing
    but its place on the database's bell (rung by each commit that wrote events in this process)."""
    bell, cursor = coord.db.bell, after
    deadline = anyio.current_time() + lasts_s
    while True:
        seen = bell.rung
        page = await anyio.to_thread.run_sync(coord.feed, scope, cursor, PAGE)
        for e in page:
            cursor = e.seq or cursor
            yield ServerSentEvent(json.dumps(public_event(e), separators=(",", ":")), id=str(cursor))
        if len(page) == PAGE:
            continue
        left = deadline - anyio.current_time()
        if left <= 0:
            return
        await bell.wait_async(seen, min(STREAM_POLL_S, left))


@events.get("/stream", response_class=EventSourceResponse,
            responses={200: {"description": "text/event-stream: each event's JSON as `data`, its cursor as `id`; "
                             "comment lines as heartbeats. The stream ends after a while (its token is checked "
                             "again at each connection): reconnect with Last-Event-ID, as EventSource does",
                             "content": {"text/event-stream": {"schema": SSE_EVENT}}}},
            summary="The feed as Server-Sent Events: what GET /events answers, then each new event as it is written")
def stream(request: Request, coord: CoordinatorDep, who: PrincipalDep, after: Cursor = 0,
           last_event_id: Annotated[str, Header(pattern=r"^([0-9]{1,18})?$", description="the last cursor "
                                                "received (EventSource sends it when it reconnects); wins over "
                                                "`after`")] = ""):
    app = request.app.state
    give_back = app.stream_slots.take("admin" if who.admin else f"tenant:{who.tenant_id}")
    start = int(last_event_id) if last_event_id else after
    content = _events(coord, who.scope, start, app.stream_lasts_s)
    return _Stream(content, give_back, ping=app.heartbeat_s, headers={"Cache-Control": "no-store"})


def _hooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


def _public(w: Webhook) -> schemas.WebhookPublic:
    return schemas.WebhookPublic(id=w.id, url=w.url, created_at=from_epoch(w.created_at), cursor=w.cursor,
                                 attempts=w.attempts, next_try=from_epoch(w.next_try) if w.attempts else None,
                                 last_error=w.last_error,
                                 delivered_at=from_epoch(w.delivered_at) if w.delivered_at else None)


@webhooks.post("", response_model=schemas.WebhookCreated, status_code=status.HTTP_201_CREATED,
               summary="POST each event of the tenant's reservations, from now on, to a URL; the secret is shown once")
def create_webhook(name: str, body: schemas.WebhookCreate, request: Request, who: PrincipalDep):
    w, secret = _hooks(request).create(name, who.scope, body.url)
    return schemas.WebhookCreated(**_public(w).model_dump(), secret=secret)


@webhooks.get("", response_model=list[schemas.WebhookPublic])
def list_webhooks(name: str, request: Request, who: PrincipalDep):
    return [_public(w) for w in _hooks(request).list(name, who.scope)]


@webhooks.delete("/{wid}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(name: str, wid: Annotated[int, Path(ge=1, le=2**31 - 1)], request: Request, who: PrincipalDep):
    _hooks(request).delete(name, who.scope, wid)
