"""The three state machines of OGF NSI Connection Service 2.0, as transition tables.

Names are NSI's. Events are the messages (reserve, commit, ...) and the internal outcomes
(``*_ok``, ``*_fail``, ``timeout``, ``end_time``, ``forced_end``).
"""

from __future__ import annotations

from dataclasses import dataclass

from iris_haas.contract.errors import IllegalTransition


@dataclass(frozen=True)
class Machine:
    name: str
    initial: str
    transitions: dict[tuple[str, str], str]

    @property
    def states(self) -> set[str]:
        return {s for s, _ in self.transitions} | set(self.transitions.values())

    def accepts(self, state: str, event: str) -> bool:
        return (state, event) in self.transitions

    def next(self, state: str, event: str) -> str:
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None


RESERVATION = Machine(
    "reservation",
    "ReserveStart",
    {
        ("ReserveStart", "reserve"): "ReserveChecking",
        ("ReserveChecking", "reserve_ok"): "ReserveHeld",
        ("ReserveChecking", "reserve_fail"): "ReserveFailed",
        ("ReserveHeld", "commit"): "ReserveCommitting",
        # Success and failure both end in ReserveStart: a failed commit restores the last
        # committed version.
        ("ReserveCommitting", "commit_ok"): "ReserveStart",
        ("ReserveCommitting", "commit_fail"): "ReserveStart",
        ("ReserveHeld", "abort"): "ReserveAborting",
        ("ReserveFailed", "abort"): "ReserveAborting",
        ("ReserveTimeout", "abort"): "ReserveAborting",
        ("ReserveAborting", "abort_ok"): "ReserveStart",
        ("ReserveHeld", "timeout"): "ReserveTimeout",
    },
)

PROVISION = Machine(
    "provision",
    "Released",
    {
        ("Released", "provision"): "Provisioning",
        ("Provisioning", "provision_ok"): "Provisioned",
        ("Provisioning", "provision_fail"): "Released",
        ("Provisioned", "release"): "Releasing",
        ("Releasing", "release_ok"): "Released",
    },
)

LIFECYCLE = Machine(
    "lifecycle",
    "Created",
    {
        ("Created", "terminate"): "Terminating",
        ("Created", "end_time"): "PassedEndTime",
        ("Created", "forced_end"): "Failed",
        ("Failed", "terminate"): "Terminating",
        ("PassedEndTime", "terminate"): "Terminating",
        ("Terminating", "terminate_ok"): "Terminated",
    },
)

MACHINES = {m.name: m for m in (RESERVATION, PROVISION, LIFECYCLE)}
