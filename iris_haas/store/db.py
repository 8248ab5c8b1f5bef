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

The schema is Alembic's. A new (empty) database is created at the newest revision when a
coordinator first opens it; an older one is upgraded only when the operator asks (``iris db
upgrade``, or ``iris serve --migrate``), since an upgrade is the moment to have a backup: see
:meth:`Database.prepare`. Upgrades take an advisory lock on PostgreSQL, so coordinators started
together on one database migrate it once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from iris_haas.contract.errors import IrisError
from iris_haas.store.models import Event

MIGRATIONS = Path(__file__).parent / "migrations"
ADMISSION_LOCK_KEY = 0x1215  # "iris", arbitrary but fixed
EVENTS_LOCK_KEY = 0x1217  # beside the admission lock's and the leader's (control.lease)
MIGRATE_LOCK_KEY = 0x1218


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
    engine = create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)

    @event.listens_for(engine, "connect", insert=True)
    def _postgresql_connect(dbapi_conn, _record):
        # psycopg prepares a statement run five times, and PostgreSQL may then plan it once for any
        # parameters: a generic plan misjudges the rare values admission asks for (status =
        # 'draining' under a LIMIT became a scan of every allocation, 20 ms at 100,000). Each
        # execution is planned for its own values instead.
        autocommit, dbapi_conn.autocommit = dbapi_conn.autocommit, True
        with dbapi_conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_conn.autocommit = autocommit

    return engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default the newest; idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


class SchemaError(IrisError):
    """The database's schema is not the one this Iris works on: nothing was started."""

    status, type = 503, "SchemaError"


class SchemaState(StrEnum):
    EMPTY = "empty"  # no table at all: a new database
    CURRENT = "current"  # at the newest revision
    BEHIND = "behind"  # an older revision: `iris db upgrade`
    AHEAD = "ahead"  # a revision this Iris does not know (a newer Iris migrated it)
    FOREIGN = "foreign"  # tables, but no Alembic revision: not Iris's database


@dataclass(frozen=True)
class Schema:
    state: SchemaState
    current: str | None  # the database's revision
    head: str  # this Iris's newest

    def describe(self) -> str:
        return {SchemaState.EMPTY: f"empty (no schema yet; this Iris's newest is {self.head})",
                SchemaState.CURRENT: f"{self.current} (the newest)",
                SchemaState.BEHIND: f"{self.current}, older than this Iris's {self.head}: run `iris db upgrade`",
                SchemaState.AHEAD: f"{self.current}, unknown to this Iris (newest {self.head}): a newer Iris "
                                   "migrated it; run that version",
                SchemaState.FOREIGN: "tables but no Alembic revision: not an Iris database"}[self.state]


def schema(engine: Engine) -> Schema:
    """Where the database's schema stands against this Iris's migrations (reads only)."""
    scripts = ScriptDirectory.from_config(alembic_config(""))
    head = scripts.get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = inspect(conn).get_table_names()
    if current is None:
        state = SchemaState.FOREIGN if tables else SchemaState.EMPTY
    elif current == head:
        state = SchemaState.CURRENT
    else:
        known = {r.revision for r in scripts.walk_revisions()}
        state = SchemaState.BEHIND if current in known else SchemaState.AHEAD
    return Schema(state, current, head)


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
        event.listen(self._sessions, "after_rollback", self._forget_events)

    @staticmethod
    def _forget_events(session: Session) -> None:
        session.info.pop("new_events", None)
        session.info.pop("unwritten_events", None)

    @staticmethod
    def _note_events(session: Session, _ctx, _instances) -> None:
        new = [o for o in session.new if isinstance(o, Event) and o.seq is None]  # not numbered yet
        if new:
            session.info.setdefault("new_events", []).extend(new)

    @staticmethod
    def add_event(session: Session, event: Event) -> None:
        """Write ``event`` with this transaction, at its commit: inserted once, already numbered
        (an event added to the session is inserted by the first flush, then numbered by an update)."""
        session.info.setdefault("unwritten_events", []).append(event)

    def _number_events(self, session: Session) -> None:
        """Give this transaction's events the next seqs, in the order they were written: those
        added to the session (already inserted) first, then those of :meth:`add_event`."""
        session.flush()
        new = sorted(session.info.pop("new_events", ()), key=lambda e: e.id)
        unwritten = session.info.pop("unwritten_events", [])
        if not new and not unwritten:
            return
        if self.is_postgresql:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK_KEY})
        top = session.scalar(select(func.max(Event.seq))) or 0
        for e in new + unwritten:
            top += 1
            e.seq = top
        session.add_all(unwritten)
        session.flush()
        session.info["numbered"] = True

    def _rang(self, session: Session) -> None:
        if session.info.pop("numbered", False):
            self.bell.ring()

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self, revision: str = "head") -> None:
        migrate(self.engine, revision)

    def schema(self) -> Schema:
        return schema(self.engine)

    def prepare(self, *, upgrade: bool = False) -> Schema:
        """Make the database ready for a coordinator: an empty one gets the schema; an older one is
        upgraded only if ``upgrade`` (else a SchemaError, before anything is written); one from a
        newer Iris, or not Iris's, is always refused."""
        s = self.schema()
        if s.state == SchemaState.EMPTY or (s.state == SchemaState.BEHIND and upgrade):
            self.migrate()
            return self.schema()
        if s.state == SchemaState.BEHIND:
            raise SchemaError(f"database schema {s.current} is older than this Iris's {s.head}: back it up, then "
                              "run `iris db upgrade` (or start with --migrate, migrate = true in the config file)",
                              current=s.current, head=s.head)
        if s.state != SchemaState.CURRENT:
            raise SchemaError(f"database schema {s.describe()}", current=s.current, head=s.head)
        return s

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
