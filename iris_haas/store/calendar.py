"""The calendar: which allocations overlap an interval, and their peak over it.

Admission is exact over every instant of [start, end): a resource fits when, for each dimension,
the peak of the summed overlapping allocations plus the request stays within capacity. (For each
dimension separately is the same as for each instant, since all new allocations span the interval.)
"""

from __future__ import annotations

import heapq
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

from iris_haas.store.models import Allocation

DRAINING = "draining"  # an allocation status: see models.Allocation.drain_generation

# The columns each resource kind consumes, in a fixed order.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "node": ("cpus", "memory_mb", "disk_gb"),
    "link": ("mbps",),
    "pool": ("gb",),
}

Interval = tuple[float, float, tuple[int, ...]]


class Free(dict[int, tuple[int, ...]]):
    """Free capacity per resource, made as a copy of the capacities: it remembers which entries
    were set since (``changed``), so :func:`place` need not look at the thousands of resources
    that are still wholly free."""

    def __init__(self, capacities: dict[int, tuple[int, ...]], changes: Mapping[int, tuple[int, ...]] | None = None):
        super().__init__(capacities)
        if changes:
            super().update(changes)
        self.changed: set[int] = set(changes or ())

    def __setitem__(self, key: int, value: tuple[int, ...]) -> None:
        self.changed.add(key)
        super().__setitem__(key, value)


def rank(capacities: Mapping[int, tuple[int, ...]]) -> list[int]:
    """Resource ids from the largest capacity down (ties: the lower id first), as :func:`place`
    prefers them when wholly free."""
    return sorted(capacities, key=lambda rid: (tuple(-x for x in capacities[rid]), rid))


def peak(intervals: Iterable[Interval], lo: float, hi: float, dims: int) -> tuple[int, ...]:
    """Per dimension, the largest sum of amounts over any instant in [lo, hi) (half-open)."""
    if isinstance(intervals, list) and len(intervals) == 1:  # most resources in a busy calendar
        s, e, amount = intervals[0]
        return tuple(amount) if max(s, lo) < min(e, hi) else (0,) * dims
    events: list[tuple[float, int, tuple[int, ...]]] = []
    for s, e, amount in intervals:
        s, e = max(s, lo), min(e, hi)
        if s < e:
            events.append((s, 1, amount))
            events.append((e, -1, amount))
    # At the same instant an end (-1) sorts before a start (+1): [a, b) and [b, c) never overlap.
    events.sort(key=lambda ev: (ev[0], ev[1]))
    current = [0] * dims
    best = [0] * dims
    for _, sign, amount in events:
        for d in range(dims):
            current[d] += sign * amount[d]
            if current[d] > best[d]:
                best[d] = current[d]
    return tuple(best)


# The calendar's statements, compiled once per dialect: (dialect, driver, paramstyle, kind,
# statement, whether a reservation is excluded) -> the SQL, the order of its parameters (None:
# the driver takes them by name) and the values of those that are constants (the kind, the
# draining status).
_compiled: dict[tuple, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def _statement(kind: str, what: str, exclude: bool) -> Select:
    """``longest``: the longest duration of an allocation of ``kind``. ``overlap``: (resource_id,
    start, end, *amounts) of each allocation of ``kind`` overlapping [:start, :end), put so that
    the calendar's index answers it as one range (starts from :earliest, the start less the
    longest duration). ``draining``: (resource_id, *amounts) of each draining allocation: an
    ended reservation's L1 or volume that its host has not yet confirmed gone still takes its
    room there, over any interval, so nothing is overbooked on the real machine."""
    if what == "longest":
        return select(func.max(Allocation.duration_s)).where(Allocation.resource_kind == kind)
    amounts = [getattr(Allocation, c) for c in DIMENSIONS[kind]]
    if what == "draining":
        return select(Allocation.resource_id, *amounts).where(
            Allocation.resource_kind == kind, Allocation.status == DRAINING)
    where = [
        Allocation.resource_kind == kind,
        Allocation.start >= bindparam("earliest"),
        Allocation.start < bindparam("end"),
        Allocation.end > bindparam("start"),
        Allocation.status != DRAINING,
    ]
    if exclude:
        where.append(Allocation.reservation_id != bindparam("exclude"))
    return select(Allocation.resource_id, Allocation.start, Allocation.end, *amounts).where(*where)


def _rows(session: Session, kind: str, what: str, **params: Any) -> Sequence[Any]:
    """A calendar statement's rows (:func:`_statement`) as the driver's own tuples, read from its
    cursor: the calendar reads a thousand rows per request at scale, and making a SQLAlchemy row
    of each, or compiling the statement each time, cost more than the query. What the session
    holds pending is flushed first, as before its own queries."""
    session.flush()
    conn = session.connection()
    dialect = conn.dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle, kind, what, "exclude" in params)
    sql = _compiled.get(key)
    if sql is None:
        compiled = _statement(kind, what, "exclude" in params).compile(dialect=dialect)
        sql = _compiled[key] = (compiled.string, tuple(compiled.positiontup or ()) if compiled.positional else None,
                                {k: v for k, v in compiled.construct_params(params).items() if k not in params})
    text, order, constants = sql
    params.update(constants)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(text, tuple(params[k] for k in order) if order is not None else params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _window(session: Session, kind: str, start: float, end: float,
            exclude_reservation: str | None) -> dict[str, Any] | None:
    """The parameters of ``overlap`` for [start, end); None when there is no allocation of
    ``kind`` at all."""
    longest = _rows(session, kind, "longest")[0][0]
    if longest is None:
        return None
    params: dict[str, Any] = {"earliest": start - longest, "end": end, "start": start}
    if exclude_reservation is not None:
        params["exclude"] = exclude_reservation
    return params


def overlapping(session: Session, kind: str, start: float, end: float, *,
                exclude_reservation: str | None = None) -> dict[int, list[Interval]]:
    """All allocations of ``kind`` overlapping [start, end), grouped by resource, in one query
    (the draining ones in another, as if they spanned [start, end))."""
    window = _window(session, kind, start, end, exclude_reservation)
    if window is None:
        return {}
    grouped: dict[int, list[Interval]] = defaultdict(list)
    for rid, s, e, *amount in _rows(session, kind, "overlap", **window):
        grouped[rid].append((s, e, tuple(amount)))
    for rid, *amount in _rows(session, kind, "draining"):
        grouped[rid].append((start, end, tuple(amount)))
    return grouped


def used(session: Session, kind: str, start: float, end: float, *,
         exclude_reservation: str | None = None) -> dict[int, tuple[int, ...]]:
    """Per resource with anything on it, the peak over [start, end): what :func:`peak` gives
    for :func:`overlapping`'s intervals, without making an interval of each allocation. Most
    resources have a single overlapping allocation, and its amount is the peak."""
    window = _window(session, kind, start, end, exclude_reservation)
    if window is None:
        return {}
    first: dict[int, tuple] = {}
    more: dict[int, list[tuple]] = {}
    for row in _rows(session, kind, "overlap", **window):
        if row[0] in first:
            more.setdefault(row[0], [first[row[0]]]).append(row)
        else:
            first[row[0]] = row
    out = {rid: row[3:] for rid, row in first.items()}
    for rid, rows in more.items():
        out[rid] = peak([(r[1], r[2], r[3:]) for r in rows], start, end, len(DIMENSIONS[kind]))
    for rid, *amount in _rows(session, kind, "draining"):
        out[rid] = tuple(map(operator.add, out[rid], amount)) if rid in out else tuple(amount)
    return out


def remaining(capacities: dict[int, tuple[int, ...]], usage: Mapping[int, tuple[int, ...]]) -> Free:
    """Capacity minus ``usage`` (a peak per resource), for the resources in ``capacities``."""
    return Free(capacities, {rid: tuple(map(operator.sub, cap, u))
                             for rid, u in usage.items() if (cap := capacities.get(rid)) is not None})


def free_capacity(
    capacities: dict[int, tuple[int, ...]],
    usage: dict[int, list[Interval]],
    start: float,
    end: float,
) -> Free:
    """Capacity minus peak usage over [start, end), per resource."""
    return remaining(capacities, {rid: peak(intervals, start, end, len(cap)) for rid, intervals in usage.items()
                                  if (cap := capacities.get(rid)) is not None})


def fit_count(free: dict[int, tuple[int, ...]], need: tuple[int, ...]) -> int:
    """How many units of ``need`` fit in total (each unit wholly on one resource)."""
    total = 0
    for f in free.values():
        per = [f[d] // need[d] for d in range(len(need)) if need[d] > 0]
        total += max(0, min(per)) if per else 0
    return total


def place(free: dict[int, tuple[int, ...]], need: tuple[int, ...], count: int,
          ranked: Sequence[int] | None = None) -> list[int] | None:
    """Choose resources for ``count`` units of ``need``, each on the freest resource that fits.

    Returns the chosen resource ids (a resource may appear more than once), or None if they
    do not fit. Greedy is exact here: every unit is identical and spans the whole interval,
    so the units fit if and only if the per-resource counts add up to ``count``.

    With ``ranked`` (:func:`rank` of the capacities ``free`` was made from, a :class:`Free`), only
    the changed resources and the first ``count`` wholly free ones that fit are looked at: the
    same choice, without a pass over every resource.
    """
    dims = range(len(need))

    def holds(f: tuple[int, ...]) -> bool:
        return all(map(operator.ge, f, need))

    if ranked is not None and isinstance(free, Free):
        fits = [(f, rid) for rid in free.changed if holds(f := free[rid])]
        whole = 0
        for rid in ranked:
            if whole == count:
                break
            if rid not in free.changed and holds(f := free[rid]):
                fits.append((f, rid))
                whole += 1
    else:
        fits = [(f, rid) for rid, f in free.items() if holds(f)]
    # Each of the ``count`` freest fitting resources takes at least one unit, so looking further
    # never changes whether the units fit; it only costs time with thousands of resources.
    top = heapq.nlargest(count, fits, key=lambda x: (x[0], -x[1]))
    # max-heap on the free vector (negated), ties broken by the lower resource id
    heap = [(tuple(-x for x in f), rid) for f, rid in top]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < count:
        if not heap:
            return None
        neg, rid = heapq.heappop(heap)
        chosen.append(rid)
        left = tuple(-neg[d] - need[d] for d in dims)
        if all(left[d] >= need[d] for d in dims):
            heapq.heappush(heap, (tuple(-x for x in left), rid))
    return chosen
