"""The dependency rule, read from the imports: no module imports against the layers, none forms a
cycle, and the lab never builds an op itself (it plans through iris_haas.planning)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2] / "iris_haas"
ANY = {"contract", "planning", "store", "managers", "control", "api", "cli", "linux", "hostd", "agent", "lab",
       "demo", "nsi"}
ALLOWED = {  # layer -> the layers it may import (itself always)
    "contract": set(),
    "linux": {"contract"},
    "planning": {"contract"},
    "store": {"contract"},
    "nsi": {"contract", "agent.client"},  # NSI messages and the requester (providers reached like the agents)
    "managers": {"contract", "planning", "store", "nsi"},
    "control": {"contract", "planning", "store", "managers", "agent.client", "nsi"},
    "hostd": {"contract", "linux"},
    "agent": {"contract", "linux", "hostd"},
    "api": {"contract", "store", "managers", "control", "agent.client", "nsi"},
    "cli": ANY,
    "lab": ANY - {"cli", "demo"},
    "demo": ANY - {"cli"},
}
NARROW = {"agent.client": {"contract", "linux"}}  # a module held to less than its layer


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        if "migrations" in p.parts:
            continue
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("iris_haas")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iris_haas"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(src: str, dst: str) -> bool:
    lsrc, ldst = layer(src), layer(dst)
    if ldst == "" or lsrc == ldst:
        return lsrc != "" or ldst == ""
    rule = ALLOWED.get(lsrc, set())
    for narrow, layers in NARROW.items():
        if src == f"iris_haas.{narrow}" or src.startswith(f"iris_haas.{narrow}."):
            rule = layers
    return ldst in rule or any(dst == f"iris_haas.{m}" or dst.startswith(f"iris_haas.{m}.") for m in rule)


def test_no_module_imports_against_the_layers():
    mods = modules()
    bad = []
    for name, path in sorted(mods.items()):
        for dst in sorted(imports(path)):
            if dst in mods or dst.rsplit(".", 1)[0] in mods:
                target = dst if dst in mods else dst.rsplit(".", 1)[0]
                if not allowed(name, target):
                    bad.append(f"{name} imports {target}")
    assert bad == [], "\n".join(bad)


def test_no_import_cycle():
    mods = modules()
    graph = {n: {d if d in mods else d.rsplit(".", 1)[0] for d in imports(p)} & set(mods) - {n}
             for n, p in mods.items()}
    # a package's __init__ importing its own submodules is how a package exposes them, not a cycle
    for n in graph:
        graph[n] = {d for d in graph[n] if not d.startswith(n + ".")}
    seen, stack, cycles = set(), [], []

    def visit(n: str) -> None:
        if n in stack:
            cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for d in sorted(graph[n]):
            visit(d)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert cycles == [], "\n".join(cycles)


def test_the_lab_builds_no_op_itself():
    from iris_haas.contract import ops

    op_classes = {n for n in dir(ops) if n.endswith("Op") and n[0].isupper()}
    bad = []
    for name, path in modules().items():
        if layer(name) != "lab":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in op_classes:
                bad.append(f"{name} builds {node.func.id}")
    assert bad == [], bad


def test_the_rule_refuses_an_upward_import():
    assert not allowed("iris_haas.planning.network", "iris_haas.control.engine")
    assert not allowed("iris_haas.hostd.reconciler", "iris_haas.agent.server")
    assert not allowed("iris_haas.agent.client", "iris_haas.hostd.reconciler")
    assert not allowed("iris_haas.contract.ops", "iris_haas.linux.tc")
    assert allowed("iris_haas.control.sync", "iris_haas.agent.client")
    assert not allowed("iris_haas.control.sync", "iris_haas.agent.server")
