"""A private PostgreSQL server for the tests and the benches: Debian's binaries, a cluster in a
temporary directory, a Unix socket only (no TCP port), stopped by its PID."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from iris_haas.store.db import Database


def pg_bindir() -> Path | None:
    base = Path("/usr/lib/postgresql")
    if not base.exists():
        return None
    for v in sorted(base.iterdir(), reverse=True):
        if (v / "bin" / "postgres").exists():
            return v / "bin"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="iris-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.proc: subprocess.Popen | None = None
        self._n = itertools.count()

    def _as_postgres(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, **kw)

    def start(self) -> None:
        """Start the server; the first start creates the cluster and a migrated template."""
        pw = pwd.getpwnam("postgres")
        first = not self.data.exists()
        if first:
            self.sock.mkdir(parents=True)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            self._as_postgres(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                              "--no-sync", "-E", "UTF8")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "postgres"), "-D", str(self.data),
             "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.sock}", "-c", "fsync=off",
             "-c", "max_connections=200", "-c", "synchronous_commit=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        # the socket file, not its lock (which a restart may find left over), and an answer on it
        while not (self.sock / ".s.PGSQL.5432").exists() or not self._answers():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.05)
        if not first:
            return
        template = Database(self.url("postgres"))
        with template.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("CREATE DATABASE iris_template")
        template.dispose()
        tdb = Database(self.url("iris_template"))
        tdb.migrate()
        tdb.dispose()

    def _answers(self) -> bool:
        return subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.sock)]).returncode == 0

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.sock}"

    def fresh_database(self) -> str:
        name = f"iris_test_{next(self._n)}"
        admin = Database(self.url("postgres"))
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE iris_template")
        admin.dispose()
        return self.url(name)

    def stop(self, keep: bool = False) -> None:
        """Stop the server (by its PID); unless ``keep``, remove its cluster too."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to our own postgres: "smart" shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        deadline = time.time() + 20  # runuser returns before the postmaster has finished
        while (self.data / "postmaster.pid").exists() and time.time() < deadline:
            time.sleep(0.05)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
