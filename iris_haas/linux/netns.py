"""Named network namespaces (``/run/netns/NAME``, as ``ip netns`` makes them): entering one, opening
a socket inside one, and finding the processes that run in one.

A namespace is identified by its nsfs inode *and* the device of the file system that holds it: a
namespace deleted and made again under the same name is a different namespace, and a process
still in the old one is not in the new one.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (setns(2)); for a thread that
    opens sockets there, or a process about to serve there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path(name), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` run by a short-lived thread that entered namespace ``netns``: what it makes there
    (a socket, a tap by ioctl) stays there, and the calling thread never changes namespace."""
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(netns)
            done.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failed.append(e)

    t = threading.Thread(target=run, name=f"setns-{netns}")
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return done[0]


def socket_in_netns(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
                    proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ``netns`` whatever thread uses it (a socket stays in the
    namespace it was made in)."""
    return run_in_netns(netns, lambda: socket.socket(family, type, proto))


def _identity(p: str) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_netns(pid: int, name: str) -> bool:
    """Whether process ``pid`` is in namespace ``name`` (not in an older one of the same name)."""
    want = _identity(path(name))
    return want is not None and _identity(f"/proc/{pid}/ns/net") == want


def processes_in(names: Iterable[str]) -> list[int]:
    """PIDs of the processes (this one excepted) whose network namespace is one of ``names``."""
    wanted = {i for i in (_identity(path(n)) for n in names) if i is not None}
    if not wanted:
        return []
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and _identity(f"/proc/{d}/ns/net") in wanted:
            out.append(int(d))
    return sorted(out)
