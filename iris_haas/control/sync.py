"""Desired state to the hosts: versioned in the database, sent until each host has it.

Every host (an L0 or a gateway) has a row in ``host_sync``: the **generation** of its desired
state, which only grows (bumped when the derived op list changes: a digest of it is kept), the
generation the host last **acknowledged**, whether its agent found the host **in sync**, when it
was **last seen**, and the last error with a backoff for the next try.

:meth:`Syncer.refresh` brings the desired state up to date with the database (under the
admission lock, so two coordinators never number two different states alike): only the tenants
whose data plane changed since are planned again and only the hosts where their part changed are
compared (:mod:`iris_haas.control.desired`; every host on start, after an inventory change and
every ``full_every`` reconciler passes), and the generations that changed are bumped. :meth:`Syncer.push` sends each host that is behind its whole state, every host at once
on a pool of threads, each call bounded in time: a black-holed agent delays only the calls that
wait for that host, never another host's push. The leader's scheduler runs
:meth:`Syncer.reconcile` on every tick, so a host that missed a push (down, unreachable,
rebooted) is sent its state again with backoff until it acknowledges it: nothing depends on one
push arriving.

Where desired state goes is a :class:`DataPlane`: ``InMemoryDataPlane`` is the twin of the
control-plane tests (it records what each host was told and claims nothing about a real data
plane); ``AgentDataPlane`` PUTs the state to the host's ``iris agent`` over mutual TLS, and
accepts the answer only from a server whose certificate names that host.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from iris_haas.contract import failpoints
from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import DesiredState
from iris_haas.control.desired import DesiredCache
from iris_haas.store.db import Database
from iris_haas.store.models import HostSync

if TYPE_CHECKING:
    from iris_haas.agent.client import AgentClient, ClientTls

log = logging.getLogger("iris.sync")

MAX_BACKOFF_S = 30.0


class HostAhead(DataPlaneError):
    """The host holds a newer generation than the one sent (another controller's)."""

    def __init__(self, host: str, held: int):
        super().__init__(f"host {host} holds generation {held}")
        self.held = held


@dataclass(frozen=True)
class Ack:
    """What a host answered: the generation it now holds, and whether its agent found the host
    matching it after applying."""

    generation: int
    in_sync: bool
    refused: tuple[str, ...] = ()  # ops its policy will not do, with the reasons


class DataPlane(Protocol):
    def push(self, host: str, agent_url: str | None, state: DesiredState) -> Ack: ...

    def observe(self, host: str, agent_url: str | None) -> Ack | None:
        """What the host holds now (the generation and whether it matches it), without changing
        it; None when the host has no agent to ask (it holds nothing)."""
        ...

    def metrics(self, host: str, agent_url: str | None) -> str:
        """The host's use and traffic now: its agent's ``/metrics`` (Prometheus text)."""
        ...


class InMemoryDataPlane:
    """Keeps the state each host was last sent (the op objects themselves: a state is immutable
    once derived, so nothing is copied); ``hosts`` shows it as an agent's JSON would."""

    def __init__(self) -> None:
        self.states: dict[str, DesiredState] = {}
        self.generations: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def hosts(self) -> dict[str, list[dict]]:
        """Each host that holds anything: its ops as dicts."""
        with self._lock:
            states = dict(self.states)
        return {h: [op.model_dump() for op in st.ops] for h, st in states.items()}

    def push(self, host: str, agent_url: str | None, state: DesiredState) -> Ack:
        with self._lock:
            if state.version < self.generations.get(host, 0):
                raise HostAhead(host, self.generations[host])
            self.generations[host] = state.version
            if state.ops:
                self.states[host] = state
            else:
                self.states.pop(host, None)
        return Ack(state.version, True)

    def observe(self, host: str, agent_url: str | None) -> Ack | None:
        with self._lock:
            return Ack(self.generations.get(host, 0), True)

    def metrics(self, host: str, agent_url: str | None) -> str:
        """Nothing: the in-memory twin carries no traffic and runs no L1."""
        return ""

    def lose(self, host: str) -> None:
        """The host was rebuilt (a reboot that wiped its state): it holds nothing any more."""
        with self._lock:
            self.states.pop(host, None)
            self.generations.pop(host, None)


class AgentDataPlane:
    """PUT /v1/desired on each host's agent, at its ``https://`` URL with the coordinator's
    certificate (``tls``); the server must prove it is the host by that name (its certificate's),
    so a host's acknowledgement comes from that host whatever address answered. ``token``
    instead of ``tls``: agents run with ``--insecure-http`` (development only). ``netns``: open
    the connections from inside that network namespace (the lab's control network exists only in
    namespaces). ``timeout`` bounds one push, so an agent that does not answer costs at most that."""

    def __init__(self, tls: ClientTls | None = None, *, token: str | None = None, netns: str | None = None,
                 timeout: float = 120.0):
        if (tls is None) == (token is None):
            raise ValueError("agents are reached with TLS or, insecurely, with a token: one of the two")
        self.tls, self.token, self.netns, self.timeout = tls, token, netns, timeout

    def _client(self, host: str, agent_url: str, timeout: float) -> AgentClient:
        from iris_haas.agent.client import AgentClient

        return AgentClient(agent_url, self.tls, node=host, token=self.token, netns=self.netns, timeout=timeout)

    def push(self, host: str, agent_url: str | None, state: DesiredState) -> Ack:
        from iris_haas.agent.client import AgentError

        if not agent_url:
            if state.ops:
                raise DataPlaneError(f"host {host} has no agent URL registered")
            return Ack(state.version, True)
        with self._client(host, agent_url, self.timeout) as c:
            try:
                r = c.put(state)
            except AgentError as e:
                if "held" in e.extra:
                    raise HostAhead(host, int(e.extra["held"])) from e
                raise
        return Ack(int(r.get("version", state.version)), bool(r.get("in_sync", False)),
                   tuple(r.get("refused") or ()))

    def observe(self, host: str, agent_url: str | None) -> Ack | None:
        if not agent_url:
            return None
        with self._client(host, agent_url, min(10.0, self.timeout)) as c:
            r = c.state()
        return Ack(int(r.get("version", 0)), bool(r.get("in_sync", False)))

    def metrics(self, host: str, agent_url: str | None) -> str:
        if not agent_url:
            return ""
        with self._client(host, agent_url, min(5.0, self.timeout)) as c:
            return c.metrics()


@dataclass(frozen=True)
class Target:
    """One host's desired state at one generation, and where its agent is."""

    host: str
    url: str | None
    state: DesiredState
    bumped: bool = False  # this refresh gave the host a new generation
    behind: bool = False  # the host has not acknowledged this generation (as of the refresh)


class _Batch:
    """The outcomes of one :meth:`Syncer.push` that arrive while it waits: it records them
    together. Once closed, a late outcome is its worker's to record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self._got: list[tuple[Target, Ack | None, str | None]] = []

    def add(self, t: Target, ack: Ack | None, error: str | None) -> bool:
        with self._lock:
            if self._open:
                self._got.append((t, ack, error))
            return self._open

    def close(self) -> list[tuple[Target, Ack | None, str | None]]:
        with self._lock:
            self._open = False
            return self._got


class SyncCounts:
    """What this process's pushes and polls came to, per host and outcome (for the coordinator's
    metrics: counters only grow, and start from zero with the process, as Prometheus expects)."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, host: str, what: str, outcome: str) -> None:
        with self._lock:
            self._counts[(host, what, outcome)] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        """(host, push | poll, ok | failed | not_in_sync) -> how many."""
        with self._lock:
            return dict(self._counts)


class Syncer:
    def __init__(self, db: Database, dataplane: DataPlane, desired: DesiredCache, clock: Callable[[], float],
                 on_refresh: Callable[[Session, dict[str, HostSync]], None] | None = None,
                 workers: int = 16, full_every: int = 300):
        self.db, self.dataplane, self.desired, self.clock = db, dataplane, desired, clock
        self.on_refresh = on_refresh
        self.full_every = full_every  # every this many reconciler passes, a full derivation (0: never)
        self._passes = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iris-push")
        self._host_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._inflight: dict[str, Future] = {}
        self._polled: dict[str, float] = {}  # when the reconciler last asked each host what it holds
        self._answers: dict[str, tuple[Ack, float]] = {}  # what they answered (and when), not yet recorded
        self._answers_lock = threading.Lock()
        self.counts = SyncCounts()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- generations
    def refresh(self, *, full: bool = False, hosts: Iterable[str] | None = (), tenants: Iterable[int] = ()
                ) -> dict[str, Target]:
        """Bring the desired state up to date with the database, deriving again only what the
        changes since the last refresh concern (everything with ``full``, see
        :mod:`iris_haas.control.desired`), and bump the generation of each host whose ops
        changed. Returns the target (newest generation) of each host bumped, of each of
        ``hosts`` (None: of every host) and of each host where one of ``tenants`` has a part."""
        with self.db.transaction() as s:
            self.db.admission_lock(s)  # one numbering of generations across coordinators
            derived = self.desired.update(s, full)
            known = self.desired.hosts()
            check = known if full else (derived | self.desired.pending) & known
            wanted = known if hosts is None else (set(hosts) | self.desired.hosts_of(tenants)) & known
            q = select(HostSync)
            if not full:
                q = q.where(HostSync.host.in_(sorted(check | wanted)))
            rows = {r.host: r for r in s.scalars(q.with_for_update())}
            out: dict[str, Target] = {}
            for host in sorted(check | wanted):
                url, ops, d = self.desired.state(host)
                row = rows.get(host)
                if row is None:
                    # no digest yet: every host is sent the coordinator's state once, even an empty
                    # one, so whatever it held before (another coordinator's, a lab's) goes
                    row = HostSync(host=host, generation=0, digest="", acked=0, in_sync=False,
                                   attempts=0, next_try=0.0)
                    s.add(row)
                    rows[host] = row
                bumped = row.digest != d
                if bumped:
                    row.generation += 1
                    row.digest = d
                    row.next_try = 0.0  # a new state is sent at once, whatever the backoff
                if bumped or host in wanted:
                    # the ops were validated when planned and the merge checked that no two
                    # name one object (what DesiredState's validator checks): not again per host
                    out[host] = Target(host, url, DesiredState.model_construct(version=row.generation, ops=ops),
                                       bumped, row.acked < row.generation)
            if self.on_refresh is not None:
                self.on_refresh(s, rows)
        self.desired.stored(check)
        return out

    def behind(self) -> dict[str, tuple[int, int]]:
        """Hosts whose acknowledged generation is behind: host -> (acked, generation)."""
        with self.db.transaction() as s:
            return {r.host: (r.acked, r.generation) for r in s.scalars(select(HostSync)) if r.acked < r.generation}

    # ---------------------------------------------------------------- pushing
    def _lock_of(self, host: str) -> threading.Lock:
        with self._locks_lock:
            return self._host_locks.setdefault(host, threading.Lock())

    @staticmethod
    def _needless(row: HostSync | None, t: Target) -> bool:
        if row is not None and row.acked >= t.state.version and row.in_sync:
            return True  # someone else's push got there first
        return row is not None and row.generation > t.state.version  # a newer state is on its way

    def _push_one(self, t: Target, batch: _Batch | None = None) -> str | None:
        """Send one host its state (one push per host at a time); record the outcome, or hand it
        to ``batch`` while its caller still waits (its caller then looked at the row too)."""
        with self._lock_of(t.host):
            if batch is None:
                with self.db.transaction() as s:
                    if self._needless(s.get(HostSync, t.host), t):
                        return None
            try:
                failpoints.hit(f"push.{t.host}")
                try:
                    ack = self.dataplane.push(t.host, t.url, t.state)
                except HostAhead as e:
                    # another controller (a lab, an old coordinator) numbered past us: our state
                    # is the newest by definition, so it takes the next generation and goes again
                    t = self._jump(t, e.held + 1)
                    ack = self.dataplane.push(t.host, t.url, t.state)
                error = None
            except Exception as e:  # any transport or agent error: recorded, retried with backoff
                ack, error = None, f"{type(e).__name__}: {e}"
                log.warning("push of generation %s to %s failed: %s", t.state.version, t.host, e)
            self.counts.add(t.host, "push", "failed" if ack is None else "ok" if ack.in_sync else "not_in_sync")
            with self._answers_lock:  # a poll's answer from before this push is stale now
                self._answers.pop(t.host, None)
            if batch is not None and batch.add(t, ack, error):
                return error
            with self.db.transaction() as s:
                return self._record(s, t, ack, error)

    def _record(self, s: Session, t: Target, ack: Ack | None, error: str | None,
                row: HostSync | None = None) -> str | None:
        now = self.clock()
        row = row if row is not None else s.get(HostSync, t.host, with_for_update=True)
        if row is None:
            return error
        if ack is not None and ack.generation < row.acked:
            return None  # a newer generation's acknowledgement was recorded first: it stands
        if ack is not None:
            row.acked = max(row.acked, min(ack.generation, row.generation))
            row.in_sync = ack.in_sync and ack.generation >= row.generation
            row.last_seen, row.error, row.attempts, row.next_try = now, None, 0, 0.0
            if not row.in_sync:  # it answered but does not hold all of it: try again, slower
                error = f"host {t.host} took generation {ack.generation} but is not in sync with it"
                if ack.refused:
                    error += "; its policy refused: " + "; ".join(ack.refused)
                row.error, row.attempts = error[:1024], 1
                row.next_try = now + 1.0
        else:
            row.in_sync = False
            row.error = (error or "")[:1024]
            row.attempts += 1
            backoff = min(MAX_BACKOFF_S, 0.25 * 2 ** min(row.attempts, 10))
            row.next_try = now + backoff * random.uniform(0.8, 1.2)
        return error

    def _jump(self, t: Target, generation: int) -> Target:
        """Number the host's state past ``generation``; the state sent is derived anew, never the
        one this push carried (a newer one may have been derived since)."""
        with self.db.transaction() as s:
            row = s.get(HostSync, t.host, with_for_update=True)
            if row is not None and row.generation < generation:
                row.generation = generation
        return self.refresh(hosts=[t.host])[t.host]

    def push(self, targets: Iterable[Target], timeout: float | None = None) -> dict[str, str | None]:
        """Push each target on the pool; wait at most ``timeout`` for them. Returns host ->
        error (None: acknowledged). A host whose push has not finished in time reports that.
        The rows are read once for all the targets, and the outcomes that came in time are
        recorded in one transaction (a late one is recorded by its worker): two transactions
        however many hosts, not two per host."""
        targets = list(targets)
        out: dict[str, str | None] = {}
        with self.db.transaction() as s:
            rows = {r.host: r for r in s.scalars(select(HostSync).where(
                HostSync.host.in_(sorted(t.host for t in targets))))}
            todo = []
            for t in targets:
                if self._needless(rows.get(t.host), t):
                    out[t.host] = None
                else:
                    todo.append(t)
        batch = _Batch()
        futures = {t.host: self._pool.submit(self._push_one, t, batch) for t in todo}
        wait(list(futures.values()), timeout=timeout)
        arrived = batch.close()
        if arrived:
            with self.db.transaction() as s:
                locked = {r.host: r for r in s.scalars(select(HostSync).where(
                    HostSync.host.in_(sorted(t.host for t, _, _ in arrived))).with_for_update())}
                for t, ack, error in arrived:
                    out[t.host] = self._record(s, t, ack, error, locked.get(t.host))
        for host, f in futures.items():
            if host in out:
                continue
            if f.done():
                try:
                    out[host] = f.result()
                except Exception as e:  # noqa: BLE001 - a database error while recording
                    out[host] = f"{type(e).__name__}: {e}"
            else:
                out[host] = f"host {host} did not answer within {timeout:.0f} s"
        return out

    def sync(self, timeout: float | None = None, only: set[str] | None = None) -> dict[str, str | None]:
        """Refresh, then push every host that is behind (or only those in ``only``)."""
        targets = self.refresh(hosts=only)
        return self.push([t for t in targets.values() if t.behind], timeout)

    def _poll_one(self, t: Target) -> None:
        """Ask a host what it holds; the answer is recorded with the others of its pass
        (``_record_polls``), not in a transaction of its own: a thousand hosts polled every ten
        seconds would otherwise be a hundred transactions a second."""
        with self._lock_of(t.host):  # not beside a push, whose answer would be the newer
            try:
                ack = self.dataplane.observe(t.host, t.url)
            except Exception as e:  # unreachable: the push path's backoff deals with it
                log.info("poll of %s failed: %s", t.host, e)
                self.counts.add(t.host, "poll", "failed")
                return
            self.counts.add(t.host, "poll", "ok")
            if ack is not None:  # None: no agent to ask there, nothing to record
                with self._answers_lock:
                    self._answers[t.host] = (ack, self.clock())

    def _record_polls(self) -> None:
        """The polls' answers since the last pass, in one transaction. A host that holds less
        than it acknowledged was rebuilt (or its state wiped): it is behind again, and the pass
        sends it its state. One that holds its generation but has drifted (a change by hand, a
        restarted daemon its agent has not repaired yet) is marked out of sync and sent its state
        again, which repairs it."""
        with self._answers_lock:
            answers, self._answers = self._answers, {}
        if not answers:
            return
        with self.db.transaction() as s:
            # locked in host order, as each push locks its one row: no two wait for each other
            for row in s.scalars(select(HostSync).where(HostSync.host.in_(sorted(answers)))
                                 .order_by(HostSync.host).with_for_update()):
                ack, row.last_seen = answers[row.host]
                if ack.generation < row.acked:
                    log.warning("host %s holds generation %s, had acknowledged %s: sending it again",
                                row.host, ack.generation, row.acked)
                    row.acked, row.next_try = ack.generation, 0.0
                row.in_sync = ack.in_sync and ack.generation >= row.generation

    def reconcile(self, poll_every_s: float = 10.0) -> dict[str, str]:
        """The leader's loop body: every host still behind whose backoff has passed is sent its
        state again; every host not seen for ``poll_every_s`` is asked what it holds. Work in
        flight for a host is not doubled, and nothing here waits for a slow host."""
        self._record_polls()
        self._passes += 1
        full = self.full_every > 0 and self._passes % self.full_every == 0
        now = self.clock()
        with self.db.transaction() as s:
            rows = list(s.scalars(select(HostSync)))
        due = {r.host: "push" for r in rows if (r.acked < r.generation or not r.in_sync) and r.next_try <= now}
        for r in rows:
            seen = max(r.last_seen or -math.inf, self._polled.get(r.host, -math.inf))
            if r.host not in due and r.attempts == 0 and now - seen >= poll_every_s:
                due[r.host] = "poll"
        targets = self.refresh(full=full, hosts=due)
        for host, t in targets.items():
            if t.bumped:
                due[host] = "push"
        out: dict[str, str] = {}
        for host, what in sorted(due.items()):
            f = self._inflight.get(host)
            if host not in targets or (f is not None and not f.done()):
                continue
            if what == "poll":
                self._polled[host] = now
            work = self._push_one if what == "push" else self._poll_one
            self._inflight[host] = self._pool.submit(work, targets[host])
            out[host] = what
        return out

    def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the work the reconciler has in flight: for tests."""
        wait([f for f in self._inflight.values() if not f.done()], timeout=timeout)
        self._record_polls()

    def hosts(self) -> list[HostSync]:
        with self.db.transaction() as s:
            return list(s.scalars(select(HostSync).order_by(HostSync.host)))
