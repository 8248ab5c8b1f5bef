"""Named failpoints, for the tests that crash Iris at a chosen step and check that it recovers.

``IRIS_FAILPOINTS="name[=action],..."`` arms them; ``hit(name)`` at that step then does the
action: ``crash`` (the default: the process dies at once, as on a power cut, without cleanup),
``raise`` (:class:`FailpointHit`, for a test that runs the component in its own process) or
``hang`` (sleep for an hour, as a black-holed peer). A name ending in ``*`` matches a prefix.
Unarmed, ``hit`` costs one dictionary look-up.
"""

from __future__ import annotations

import os
import time


class FailpointHit(RuntimeError):
    pass


def _armed() -> dict[str, str]:
    spec = os.environ.get("IRIS_FAILPOINTS", "")
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = part.partition("=")
        out[name] = action or "crash"
    return out


def hit(name: str) -> None:
    armed = _armed()
    if not armed:
        return
    action = armed.get(name) or next((a for n, a in armed.items() if n.endswith("*") and name.startswith(n[:-1])),
                                     None)
    if action is None:
        return
    if action == "raise":
        raise FailpointHit(name)
    if action == "hang":
        time.sleep(3600)
        return
    os._exit(137)
