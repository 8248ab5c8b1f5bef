"""The three state machines of OGF NSI Connection Service 2.0, as transition tables.

Names are NSI's. Events are the messages (reserve, commit, ...) and the internal outcomes
(``*_ok``, ``*_fail``, ``timeout``, ``end_time``, ``forced_end``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from iris_haas.contract.errors import IllegalTransition
from iris_haas.contract.types import LifecycleState, ProvisionState, ReservationState

S = TypeVar("S", ReservationState, ProvisionState, LifecycleState)


@dataclass(frozen=True)
class Machine(Generic[S]):
    name: str
    state_type: type[S]
    initial: S
    transitions: dict[tuple[S, str], S]

    @property
    def states(self) -> set[S]:
        return {s for s, _ in self.transitions} | set(self.transitions.values())

    def state(self, value: str) -> S:
        """A stored value (the database holds the plain string) as the machine's enum."""
        return self.state_type(value)

    def accepts(self, state: str, event: str) -> bool:
        return (self.state(state), event) in self.transitions

    def next(self, state: str, event: str) -> S:
        try:
            return self.transitions[(self.state(state), event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None


R, P, L = ReservationState, ProvisionState, LifecycleState

RESERVATION = Machine(
    "reservation",
    ReservationState,
    R.START,
    {
        (R.START, "reserve"): R.CHECKING,
        (R.CHECKING, "reserve_ok"): R.HELD,
        (R.CHECKING, "reserve_fail"): R.FAILED,
        (R.HELD, "commit"): R.COMMITTING,
        # Success and failure both end in ReserveStart: a failed commit restores the last
        # committed version.
        (R.COMMITTING, "commit_ok"): R.START,
        (R.COMMITTING, "commit_fail"): R.START,
        (R.HELD, "abort"): R.ABORTING,
        (R.FAILED, "abort"): R.ABORTING,
        (R.TIMEOUT, "abort"): R.ABORTING,
        (R.ABORTING, "abort_ok"): R.START,
        (R.HELD, "timeout"): R.TIMEOUT,
    },
)

PROVISION = Machine(
    "provision",
    ProvisionState,
    P.RELEASED,
    {
        (P.RELEASED, "provision"): P.PROVISIONING,
        (P.PROVISIONING, "provision_ok"): P.PROVISIONED,
        (P.PROVISIONING, "provision_fail"): P.RELEASED,
        (P.PROVISIONED, "release"): P.RELEASING,
        (P.RELEASING, "release_ok"): P.RELEASED,
    },
)

LIFECYCLE = Machine(
    "lifecycle",
    LifecycleState,
    L.CREATED,
    {
        (L.CREATED, "terminate"): L.TERMINATING,
        (L.CREATED, "end_time"): L.PASSED_END_TIME,
        (L.CREATED, "forced_end"): L.FAILED,
        (L.FAILED, "terminate"): L.TERMINATING,
        (L.PASSED_END_TIME, "terminate"): L.TERMINATING,
        (L.TERMINATING, "terminate_ok"): L.TERMINATED,
    },
)

MACHINES: dict[str, Machine[Any]] = {m.name: m for m in (RESERVATION, PROVISION, LIFECYCLE)}
