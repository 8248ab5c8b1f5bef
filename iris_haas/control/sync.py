"""Where desired state goes: each host's agent.

The coordinator derives every host's whole desired state from the active reservations and sends
it to the hosts whose state changed; the host's agent reconciles to it.
``InMemoryDataPlane`` is the twin used by the control-plane tests: it records what each host
was told, and claims nothing about a real data plane. ``AgentDataPlane`` PUTs the state to the
host's ``iris agent`` over HTTP.
"""

from __future__ import annotations

import threading
from typing import Protocol

from iris_haas.contract.errors import DataPlaneError
from iris_haas.contract.ops import DesiredState


class DataPlane(Protocol):
    def push(self, host: str, agent_url: str | None, state: DesiredState) -> None: ...


class InMemoryDataPlane:
    def __init__(self) -> None:
        self.hosts: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def push(self, host: str, agent_url: str | None, state: DesiredState) -> None:
        with self._lock:
            if state.ops:
                self.hosts[host] = [op.model_dump() for op in state.ops]
            else:
                self.hosts.pop(host, None)


class AgentDataPlane:
    """PUT /v1/desired on each host's agent. ``netns``: open the connections from inside that
    network namespace (the lab's control network exists only in namespaces)."""

    def __init__(self, token: str, *, netns: str | None = None, timeout: float = 120.0):
        self.token, self.netns, self.timeout = token, netns, timeout

    def push(self, host: str, agent_url: str | None, state: DesiredState) -> None:
        from iris_haas.agent.client import AgentClient

        if not agent_url:
            if state.ops:
                raise DataPlaneError(f"host {host} has no agent URL registered")
            return
        with AgentClient(agent_url, self.token, netns=self.netns, timeout=self.timeout) as c:
            c.put(state)
