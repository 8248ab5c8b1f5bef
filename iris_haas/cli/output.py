"""How `iris` prints what it got: a table for a person, JSON or YAML for a program, bare values for
a shell (``IRIS_TOKEN=$(iris tenant add acme -f value -c token)``).

Every command that prints data takes ``-f/--format`` and ``-c/--column`` (repeatable, in the order
given; any field of the API's answer, not only the table's). ``json`` and ``yaml`` print the API's
objects (only the chosen columns with ``-c``); ``value`` prints one line per row, the row's values
separated by a space, a list as ``a,b``, nothing for an empty value. ``--json`` is ``-f json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"
    VALUE = "value"


Fmt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json, yaml, or value (bare values, "
                                           "one row a line)")]
Cols = Annotated[list[str] | None, typer.Option("--column", "-c", help="print only this field (repeat for several, "
                                                "in that order)")]
AsJson = Annotated[bool, typer.Option("--json", help="the same as -f json")]


@dataclass(frozen=True)
class Out:
    """What the user asked to see: a format and, maybe, columns."""

    fmt: OutputFormat = OutputFormat.TABLE
    columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, fmt: OutputFormat, columns: list[str] | None, as_json: bool = False) -> Out:
        return cls(OutputFormat.JSON if as_json else fmt, tuple(columns or ()))

    @property
    def table(self) -> bool:
        return self.fmt == OutputFormat.TABLE

    def pick(self, rows: list[dict], default: list[str]) -> list[str]:
        """The columns to print; a usage error (exit 2) names a column that no row has."""
        if not self.columns:
            return default
        known = dict.fromkeys(default) | {k: None for r in rows for k in r}
        for c in self.columns:
            if rows and c not in known:
                raise typer.BadParameter(f"{c!r} is not a column here; choose from {', '.join(known)}",
                                         param_hint="'-c' / '--column'")
        return list(self.columns)


def emit(rows: list[dict], columns: list[str], out: Out, title: str | None = None, one: bool = False) -> None:
    """Print ``rows`` (``one``: a single object, not a list, in json and yaml)."""
    cols = out.pick(rows, columns)
    if out.fmt in (OutputFormat.JSON, OutputFormat.YAML):
        data: Any = [{c: r.get(c) for c in cols} for r in rows] if out.columns else rows
        if one:
            data = data[0]
        text = json.dumps(data, indent=2, default=str)
        if out.fmt == OutputFormat.JSON:
            typer.echo(text)
        else:  # from the JSON: YAML's safe dumper knows no str subclasses (StrEnum) nor datetimes
            typer.echo(yaml.safe_dump(json.loads(text), sort_keys=False, allow_unicode=True), nl=False)
        return
    if out.fmt == OutputFormat.VALUE:
        for r in rows:
            typer.echo(" ".join(bare(r.get(c)) for c in cols))
        return
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[cell(r.get(c)) for c in cols])
    console.print(t)


def emit_line(row: dict, columns: Iterable[str], out: Out) -> None:
    """One row of a stream (``events --follow``): JSON lines, YAML documents, values, or a plain line."""
    cols = out.pick([row], list(columns))
    data = {c: row.get(c) for c in cols} if out.columns else row
    if out.fmt == OutputFormat.JSON:
        typer.echo(json.dumps(data, default=str))
    elif out.fmt == OutputFormat.YAML:
        typer.echo("---\n" + yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False,
                                             allow_unicode=True), nl=False)
    elif out.fmt == OutputFormat.VALUE:
        typer.echo(" ".join(bare(row.get(c)) for c in cols))
    else:
        console.print("  ".join(cell(row.get(c)) for c in cols), soft_wrap=True, highlight=False)


def bare(v: Any) -> str:
    """A value as a shell wants it: no quotes, nothing for None."""
    if v is None:
        return ""
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def cell(v: Any) -> str:
    """A value as a table shows it: '-' for None, times to the second."""
    if v is None:
        return "-"
    if isinstance(v, str) and len(v) > 19 and v[10:11] == "T":
        return v[:19].replace("T", " ")
    return bare(v)
