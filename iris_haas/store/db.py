"""Engine, sessions, migrations, the admission lock and the numbering of events.

Admission must see every allocation committed before it and none may slip in between its check
and its insert. On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (one writer at a
time, readers go on under WAL). On PostgreSQL, ``admission_lock`` takes a transaction-scoped
advisory lock, so concurrent reserves queue on it instead of overbooking under READ COMMITTED.

Events get their feed cursor (``Event.seq``) as their transaction commits: on PostgreSQL under a
transaction-scoped advisory lock taken just before the commit, during which the transaction only
numbers its own new rows (it waits for nothing while holding it, so no deadlock can involve it).
The next transaction to number events sees every seq given before it, so a reader that has seen a
seq will never find a smaller one appear later. SQLite's writers are one at a time already.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from iris_haas.store.models import Event

MIGRATIONS = Path(__file__).parent / "migrations"
ADMISSION_LOCK_KEY = 0x1215  # "iris", arbitrary but fixed
EVENTS_LOCK_KEY = 0x1217  # beside the admission lock's and the leader's (control.lease)


READ_ONLY = "iris_read_only"  # execution option of Database.reading's connections


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so it can be BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # No checkpoint inside a request's commit (a ~1% latency spike): Database runs them
            # from a thread of its own (see Checkpointer).
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # a reader's deferred BEGIN takes no lock: in WAL mode it reads the last commit while a writer writes
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Checkpointer:
    """Moves SQLite's write-ahead log into the database file every ``interval`` seconds, off the
    requests' path (PASSIVE: never waits for, nor blocks, readers and writers)."""

    def __init__(self, engine: Engine, interval: float = 1.0):
        self.engine, self.interval = engine, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iris-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                raw = self.engine.raw_connection()  # autocommit: no BEGIN around the pragma
                try:
                    conn = raw.driver_connection
                    if conn is not None:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    raw.close()
            except Exception:  # a busy database: the next round checkpoints
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Bell:
    """Rung after each commit that wrote events, so what waits for them in this process (event
    streams, the webhook worker) wakes at once; what other coordinators write is found by polling.
    ``rung`` counts the rings: read it before looking, and a ring in between is not missed."""

    def __init__(self) -> None:
        self.rung = 0
        self._cond = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def ring(self) -> None:
        with self._cond:
            self.rung += 1
            self._cond.notify_all()
            for loop, ev in list(self._waiters):
                with suppress(RuntimeError):  # that loop is closed: its waiter is gone
                    loop.call_soon_threadsafe(ev.set)

    def wait(self, seen: int, timeout: float) -> int:
        """Block a thread until a ring after ``seen`` or ``timeout``; the count now."""
        with self._cond:
            self._cond.wait_for(lambda: self.rung != seen, timeout)
            return self.rung

    async def wait_async(self, seen: int, timeout: float) -> int:
        """The same for a coroutine, holding no thread while it waits."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            if self.rung != seen:
                return self.rung
            self._waiters.add(waiter)
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(waiter[1].wait(), timeout)
        finally:
            with self._cond:
                self._waiters.discard(waiter)
        return self.rung


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        file_sqlite = self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:")
        self._checkpointer = Checkpointer(self.engine) if file_sqlite else None
        self.bell = Bell()
        event.listen(self._sessions, "before_flush", self._note_events)
        event.listen(self._sessions, "before_commit", self._number_events)
        event.listen(self._sessions, "after_commit", self._rang)
        event.listen(self._sessions, "after_rollback", lambda s: s.info.pop("new_events", None))

    @staticmethod
    def _note_events(session: Session, _ctx, _instances) -> None:
        new = [o for o in session.new if isinstance(o, Event)]
        if new:
            session.info.setdefault("new_events", []).extend(new)

    def _number_events(self, session: Session) -> None:
        """Give this transaction's events the next seqs, in the order they were written."""
        session.flush()
        new = session.info.pop("new_events", None)
        if not new:
            return
        if self.is_postgresql:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK_KEY})
        top = session.scalar(select(func.max(Event.seq))) or 0
        for e in sorted(new, key=lambda e: e.id):
            top += 1
            e.seq = top
        session.flush()
        session.info["numbered"] = True

    def _rang(self, session: Session) -> None:
        if session.info.pop("numbered", False):
            self.bell.ring()

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back everything on any error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A unit of work that only reads, from one snapshot. On SQLite it waits for no writer (a
        deferred transaction: WAL lets it read the last commit meanwhile), where :meth:`transaction`
        would queue behind a long one (the scheduler's tick deriving every host's state)."""
        with self._sessions() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session

    def admission_lock(self, session: Session) -> None:
        if self.is_postgresql:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADMISSION_LOCK_KEY})

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
