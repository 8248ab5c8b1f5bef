"""The one place where driver commands are executed.

Drivers build commands as plain data (:class:`Cmd`: an argv list and the network namespace to run
it in) with pure functions that tests read without root; a :class:`Runner` executes them. The
:class:`RecordingRunner` is the in-memory twin: it records what would run and answers from a
table of canned outputs.

Commands run inside a namespace with ``nsenter --net=/run/netns/NAME``: only the network namespace
changes, so files, pidfiles and namespace bind mounts created by the command stay visible on the
host (``ip netns exec`` would give the command a private mount namespace).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import IO, Protocol

from iris_haas.contract.errors import IrisError
from iris_haas.linux.netns import NETNS_DIR


class CommandFailed(IrisError):
    status, type = 500, "CommandFailed"


@dataclass(frozen=True)
class Cmd:
    argv: tuple[str, ...]
    netns: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    # exit codes that count as success (an idempotent delete tolerates "not there")
    ok: tuple[int, ...] = (0,)

    def full_argv(self) -> list[str]:
        if self.netns:
            return ["nsenter", f"--net={NETNS_DIR}/{self.netns}", "--", *self.argv]
        return list(self.argv)

    def __str__(self) -> str:  # readable, for logs and `gateway-config`
        prefix = f"ip netns exec {self.netns} " if self.netns else ""
        return prefix + " ".join(_quote(a) for a in self.argv)


def cmd(*argv: object, netns: str | None = None, env: Mapping[str, str] | None = None,
        ok: Sequence[int] = (0,)) -> Cmd:
    """A command; every argument is turned into a string (paths, numbers)."""
    return Cmd(tuple(str(a) for a in argv), netns, tuple(sorted((env or {}).items())), tuple(ok))


def _quote(a: str) -> str:
    return shlex.quote(a)


class Runner(Protocol):
    def run(self, c: Cmd, *, timeout: float = 30.0) -> str: ...

    def spawn(self, c: Cmd, *, log: str | None = None) -> int: ...


class SubprocessRunner:
    def run(self, c: Cmd, *, timeout: float = 30.0) -> str:
        env = {**os.environ, **dict(c.env)} if c.env else None
        try:
            p = subprocess.run(c.full_argv(), capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(f"timed out after {timeout}s: {c}") from e
        except FileNotFoundError as e:
            raise CommandFailed(f"not found: {c.argv[0]}") from e
        if p.returncode not in c.ok:
            raise CommandFailed(f"{c} exited {p.returncode}: {p.stderr.strip()[:500]}", returncode=p.returncode)
        return p.stdout

    def spawn(self, c: Cmd, *, log: str | None = None) -> int:
        """Start a long-running process in the background; return its PID."""
        env = {**os.environ, **dict(c.env)} if c.env else None
        with ExitStack() as files:  # the child keeps its own copy of the log's descriptor
            out: IO[bytes] | int = files.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
            p = subprocess.Popen(
                c.full_argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
            )
        return p.pid


@dataclass
class RecordingRunner:
    """In-memory twin: records commands; ``outputs`` maps an argv prefix to a canned stdout."""

    outputs: dict[tuple[str, ...], str] = field(default_factory=dict)
    log: list[Cmd] = field(default_factory=list)

    def run(self, c: Cmd, *, timeout: float = 30.0) -> str:
        self.log.append(c)
        best = ""
        best_len = -1
        for prefix, out in self.outputs.items():
            if tuple(c.argv[: len(prefix)]) == prefix and len(prefix) > best_len:
                best, best_len = out, len(prefix)
        return best

    def spawn(self, c: Cmd, *, log: str | None = None) -> int:
        self.log.append(c)
        return 0
