"""What a host action runs against (:class:`Context`), and the base of every action.

A reconcile pass plans a list of :class:`HostAction` s, one small frozen dataclass per change
(:mod:`iris_haas.hostd.actions` for links, OVSDB, tc, the warm-up and the L1 steps;
:mod:`iris_haas.hostd.storage` for volumes). Each applies itself to a :class:`Context` and prints
as a sentence: the agent reports actions as those strings.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from iris_haas.contract.types import L1Kind
from iris_haas.hostd.l1 import L1Driver, make_drivers
from iris_haas.linux.ovsdb import Ovsdb
from iris_haas.linux.runner import Runner, SubprocessRunner


@dataclass
class HostConfig:
    db: str
    netns: str | None = None  # the host's own namespace; None: the one this process runs in
    datapath_type: str = "system"
    underlay_mtu: int = 1500
    warmup: bool = True
    l1_dir: str = ""  # state of the L1 drivers (iris_haas.hostd.l1); empty: this host runs no L1s
    storage_dir: str = ""  # registry of volumes (iris_haas.hostd.storage); empty: this host keeps none


@dataclass
class Context:
    cfg: HostConfig
    runner: Runner
    l1_drivers: Mapping[L1Kind, L1Driver]
    ovsdb: Ovsdb

    @classmethod
    def of(cls, cfg: HostConfig, runner: Runner | None = None,
           l1_drivers: Mapping[L1Kind, L1Driver] | None = None) -> Context:
        """The host's context: the real L1 drivers (none without ``cfg.l1_dir``) unless given, and
        an OVSDB connection that opens at first use."""
        runner = runner or SubprocessRunner()
        if l1_drivers is None:
            l1_drivers = make_drivers(cfg.l1_dir, runner, cfg.netns) if cfg.l1_dir else {}
        return cls(cfg, runner, l1_drivers, Ovsdb(cfg.db))


class HostAction(abc.ABC):
    """One change to the host."""

    # Actions of a parallel type that follow each other in a plan run at once, and one that
    # fails stops neither the others nor the rest of the plan (see reconciler.execute).
    parallel: ClassVar[bool] = False

    @abc.abstractmethod
    def apply(self, ctx: Context) -> None: ...

    @abc.abstractmethod
    def __str__(self) -> str: ...
