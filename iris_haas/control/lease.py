"""Which coordinator leads: the one that runs the scheduler and the reconciler.

Any number of coordinators may serve the API on one database; exactly one runs the time-driven
work (hold timers, start and end times) and re-sends desired state to hosts that are behind.
On PostgreSQL the leader holds a session-level advisory lock on a connection of its own: when its
process dies the server ends the session and frees the lock, and another coordinator's next try
takes it, within one scheduler interval. On SQLite (one machine) an exclusive ``flock`` on a file
beside the database plays the same part; an in-memory database has one process by definition.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

from sqlalchemy import Connection, text

from iris_haas.store.db import Database

log = logging.getLogger("iris.lease")

LEADER_LOCK_KEY = 0x1216  # beside the admission lock's key (store.db)


class Lease:
    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._conn: Connection | None = None  # PostgreSQL: the connection whose session holds the lock
        self._fd: int | None = None  # SQLite: the flock'ed file
        self._path: Path | None = None
        if not db.is_postgresql:
            name = db.engine.url.database
            if name and name != ":memory:":
                self._path = Path(name).with_suffix(".leader")

    def held(self) -> bool:
        """Whether this coordinator leads now; tries to take the lease if nobody holds it."""
        with self._lock:
            if self.db.is_postgresql:
                return self._postgresql()
            if self._path is None:
                return True
            if self._fd is None:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    return False
                self._fd = fd
            return True

    def _postgresql(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:  # the session is gone, and the lock with it
                log.warning("lost the leader's database session")
                self._drop()
        conn = self.db.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY}).scalar()
            conn.commit()
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
            log.info("this coordinator leads")
            return True
        conn.close()
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                # closed for real, not returned to the pool: the session, and its lock, end
                self._conn.invalidate()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._conn = None

    def release(self) -> None:
        with self._lock:
            self._drop()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
