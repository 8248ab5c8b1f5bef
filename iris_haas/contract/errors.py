"""One error hierarchy; each error has an HTTP status and serializes as ``{type, message}``."""

from __future__ import annotations


class IrisError(Exception):
    status = 400
    type = "IrisError"

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict:
        return {"type": self.type, "message": self.message, **self.extra}


class NotFound(IrisError):
    status, type = 404, "NotFound"


class AlreadyExists(IrisError):
    status, type = 409, "AlreadyExists"


class InvalidInput(IrisError):
    status, type = 422, "InvalidInput"


class IllegalTransition(IrisError):
    """An NSI message that the reservation's current state does not accept."""

    status, type = 409, "IllegalTransition"

    def __init__(self, machine: str, state: str, event: str, why: str = ""):
        message = f"cannot {event}: {machine} state is {state}" + (f" ({why})" if why else "")
        super().__init__(message, machine=machine, state=state, event=event)


class ReserveFailed(IrisError):
    """Admission refused: not enough capacity over the whole interval."""

    status, type = 409, "ReserveFailed"


class VersionConflict(IrisError):
    status, type = 409, "VersionConflict"


class InUse(IrisError):
    status, type = 409, "InUse"


class Unauthorized(IrisError):
    status, type = 401, "Unauthorized"


class TooManyRequests(IrisError):
    """Too many unknown tokens from one address: it is refused for a while, whatever it sends."""

    status, type = 429, "TooManyRequests"


class Forbidden(IrisError):
    status, type = 403, "Forbidden"


class DataPlaneError(IrisError):
    """A host did not take its desired state (an agent down or refusing)."""

    status, type = 502, "DataPlaneError"
