"""Processes by PID: is one alive, stop one, read a pidfile, read a command line.

Iris stops only processes it started, by the PID it wrote or was given (a pidfile), never by
name; a caller that may meet a recycled PID checks the command line (:func:`argv`) first.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as field -> value (Uid, Seccomp, CapBnd, TracerPid, ...); empty if
    the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, v in (ln.split(":", 1) for ln in lines if ":" in ln)}


def kill_pid(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM one process by PID, SIGKILL if it lingers, and wait until it is gone; tolerant of
    it being gone already."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            _reap(pid)
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # a killed process holds its files and mounts until its exit completes: whoever unmounts
    # what it served next must not find it busy
    deadline = time.monotonic() + 10.0
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _reap(pid)


def _reap(pid: int) -> None:
    # a child of ours stays a zombie until waited for
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def read_pid(pidfile: str | Path) -> int | None:
    """The PID in a pidfile; None if the file is missing or holds no number."""
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def argv(pid: int) -> list[str] | None:
    """The command line of ``pid``; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []
