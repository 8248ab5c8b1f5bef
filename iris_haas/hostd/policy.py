"""What an agent agrees to do on its host, whoever asks: the local policy every op is checked against.

An agent only creates, changes or deletes Iris's own objects: bridges, ports, tunnels and shaped
ports named with the ``iris`` prefix, L1 namespaces within that prefix (``contract.types.NetnsName``
already refuses dots and slashes), and volumes in pool directories under the roots configured on
this host; an L1 boots an OS image only from under this host's image roots. An object Iris did not create (a device on an Iris bridge, a bridge or a tunnel of
the host's own) is touched only when this host's operator named it (``host_devices``: an IaaS
gateway's bridge, tunnel and trunk towards its own switches). A refused op is reported with its
reason and left out; the rest of the desired state applies. A per-tenant limit on an uplink
(``tunnel_limit``) only adds tc classes under the uplink's root and is not refused, nor is an NSI
circuit's end (``circuit``): a bridge of Iris's and one patch port of Iris's on the uplink's bridge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from iris_haas.contract.ops import BridgeOp, CircuitOp, L1Op, Op, PortOp, ShapeOp, TunnelOp, VolumeOp

PREFIX = "iris"
DEFAULT_POOL_ROOTS = ("/var/lib/iris/pools",)
DEFAULT_IMAGE_ROOTS = ("/var/lib/iris/images",)


@dataclass(frozen=True)
class Policy:
    pool_roots: tuple[str, ...] = DEFAULT_POOL_ROOTS
    host_devices: frozenset[str] = field(default_factory=frozenset)
    image_roots: tuple[str, ...] = DEFAULT_IMAGE_ROOTS

    def refusal(self, op: Op) -> str | None:
        """Why this host will not do ``op``; None when it will."""
        names: list[tuple[str, str]] = []
        if isinstance(op, BridgeOp | CircuitOp):
            names = [("name", op.name)]
        elif isinstance(op, TunnelOp | PortOp):
            names = [("bridge", op.bridge), ("name", op.name)]
        elif isinstance(op, ShapeOp):
            names = [("port", op.port)]
        elif isinstance(op, L1Op):
            names = [("bridge", op.bridge), ("port", op.port)]
        for what, name in names:
            if not name.startswith(PREFIX) and name not in self.host_devices:
                return f"{what} {name!r} is not Iris's (no {PREFIX!r} prefix) and not a configured host device"
        if isinstance(op, VolumeOp) and not _under(op.pool, self.pool_roots):
            return f"pool {op.pool!r} is not under this host's pool roots {list(self.pool_roots)}"
        if isinstance(op, L1Op) and op.image and not _under(op.image, self.image_roots):
            return f"image {op.image!r} is not under this host's image roots {list(self.image_roots)}"
        return None


def _under(path: str, roots: tuple[str, ...]) -> bool:
    p = Path(path).resolve()  # a symlink out of a root is out of it
    return any(p.is_relative_to(Path(root).resolve()) for root in roots)
