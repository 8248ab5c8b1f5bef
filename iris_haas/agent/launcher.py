"""Start several agents at once, each in its own network namespace, for the price of one.

An agent is a Python process that imports FastAPI, uvicorn, pydantic and pyroute2: about 0.6 s of
CPU before it serves. The lab starts one per L0 and gateway, all at the same moment, on a 2-CPU
machine, so that import dominated ``iris lab up``. The launcher imports once, then forks one child
per agent; each child enters its namespace (``setns``), becomes a session leader and runs the
ordinary agent (:func:`iris_haas.agent.cli.agent`). The launcher writes each child's PID to the
agent's pidfile before exiting, so ``iris lab down`` stops every agent by PID as before.

Usage: ``python -m iris_haas.agent.launcher SPEC.json``, where SPEC is a list of objects holding
``netns``, ``log`` and the keyword arguments of :func:`iris_haas.agent.cli.agent`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from iris_haas.linux.netns import enter_netns


def main(spec_path: str) -> int:
    # the expensive imports, once, before forking
    import uvicorn  # noqa: F401

    import iris_haas.agent.server  # noqa: F401
    from iris_haas.agent.cli import agent

    specs = json.loads(Path(spec_path).read_text())
    for s in specs:
        pid = os.fork()
        if pid == 0:  # the agent
            code = 0
            try:
                os.setsid()
                fd = os.open(s["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
                enter_netns(s["netns"])
                kw = {k: v for k, v in s.items() if k not in ("netns", "log")}
                for k in ("state_dir", "tls_dir", "token_file", "pidfile"):
                    if kw.get(k):
                        kw[k] = Path(kw[k])
                agent(**kw)
            except BaseException as e:  # noqa: BLE001 - a child must never return into the loop
                print(f"agent {s.get('node')}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                code = 1
            finally:
                os._exit(code)
        Path(s["pidfile"]).write_text(f"{pid}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
