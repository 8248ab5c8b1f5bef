"""The event feed: every reservation's events in one sequence, by their cursor (``Event.seq``,
numbered in commit order, see :mod:`iris_haas.store.db`). The API's feed and stream and the
webhooks read it with the same query, so a tenant sees the same events whichever it follows."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from iris_haas.control.schemas import from_epoch
from iris_haas.store.models import Event, Reservation


def tenant_events(s: Session, tenant_id: int | None, after: int, limit: int) -> list[Event]:
    """The events after cursor ``after``, oldest first: all of them (``tenant_id`` None, the
    admin), or only those of the tenant's own reservations."""
    q = select(Event).where(Event.seq > after)
    if tenant_id is not None:
        q = q.join(Reservation, Reservation.id == Event.reservation_id).where(Reservation.tenant_id == tenant_id)
    return list(s.scalars(q.order_by(Event.seq).limit(limit)))


def public_event(e: Event) -> dict:
    """An event as the feed, the stream and the webhooks show it; ``cursor`` resumes after it.
    ``at`` is written as the API writes its times (ISO 8601, UTC as Z), so all three agree."""
    at = from_epoch(e.at).isoformat().replace("+00:00", "Z")
    return {"cursor": e.seq, "id": e.id, "reservation_id": e.reservation_id, "at": at, "type": e.type,
            "detail": e.detail}
