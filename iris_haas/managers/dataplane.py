"""Where desired state goes once a transaction has committed it.

The coordinator pushes, per host, the full list of operations that host must realize (the agent
reconciles to it). ``InMemoryDataPlane`` is the twin used by the control-plane tests: it records
what each host was told, and claims nothing about a real data plane.
"""

from __future__ import annotations

import threading
from typing import Protocol


class DataPlane(Protocol):
    def push(self, host: str, ops: list[dict]) -> None: ...


class InMemoryDataPlane:
    def __init__(self) -> None:
        self.hosts: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def push(self, host: str, ops: list[dict]) -> None:
        with self._lock:
            if ops:
                self.hosts[host] = list(ops)
            else:
                self.hosts.pop(host, None)
