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

from sqlalchemy import func, select
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

    def __init__(self, capacities: dict[int, tuple[int, ...]]):
        super().__init__(capacities)
        self.changed: set[int] = set()

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


def overlapping(
    session: Session,
    kind: str,
    start: float,
    end: float,
    *,
    exclude_reservation: str | None = None,
    resource_ids: Sequence[int] | None = None,
) -> dict[int, list[Interval]]:
    """All allocations of ``kind`` overlapping [start, end), grouped by resource, in one query."""
    cols = [getattr(Allocation, c) for c in DIMENSIONS[kind]]
    longest = session.scalar(
        select(func.max(Allocation.duration_s)).where(Allocation.resource_kind == kind)
    )
    if longest is None:
        return {}
    q = select(Allocation.resource_id, Allocation.start, Allocation.end, *cols).where(
        Allocation.resource_kind == kind,
        Allocation.start >= start - longest,
        Allocation.start < end,
        Allocation.end > start,
        Allocation.status != DRAINING,
    )
    if exclude_reservation is not None:
        q = q.where(Allocation.reservation_id != exclude_reservation)
    if resource_ids is not None:
        q = q.where(Allocation.resource_id.in_(list(resource_ids)))
    grouped: dict[int, list[Interval]] = defaultdict(list)
    for rid, s, e, *amount in session.execute(q).tuples():
        grouped[rid].append((s, e, tuple(amount)))
    # an ended reservation's L1 or volume that its host has not yet confirmed gone still takes
    # its room there, over any interval: nothing is overbooked on the real machine
    drain = select(Allocation.resource_id, *cols).where(Allocation.resource_kind == kind,
                                                       Allocation.status == DRAINING)
    if resource_ids is not None:
        drain = drain.where(Allocation.resource_id.in_(list(resource_ids)))
    for row in session.execute(drain):
        grouped[row[0]].append((start, end, tuple(row[1:])))
    return grouped


def free_capacity(
    capacities: dict[int, tuple[int, ...]],
    usage: dict[int, list[Interval]],
    start: float,
    end: float,
) -> Free:
    """Capacity minus peak usage over [start, end), per resource."""
    out = Free(capacities)  # most resources have nothing in the interval: their capacity is free
    for rid, intervals in usage.items():
        cap = capacities.get(rid)
        if cap is not None:
            out[rid] = tuple(map(operator.sub, cap, peak(intervals, start, end, len(cap))))
    return out


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
        return all(f[d] >= need[d] for d in dims)

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
