"""The README's walk-through is true: its block runs, line by line, against a real `iris serve`.

A line is ``iris ...``, ``export NAME=VALUE ...``, or ``[export] NAME=$(iris ...)``: the command's
standard output, stripped, becomes ``$NAME``, as in a shell."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from iris_haas.api.service import LocalCoordinator
from iris_haas.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def walk_through() -> list[str]:
    text = README.read_text()
    start = text.index("A walk-through, from an empty coordinator")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, "the README lost its walk-through"
    return [line for line in block.group(1).splitlines() if line.strip()]


def run_line(line: str, url: str, values: dict[str, str], env: dict[str, str],
             substitute: Callable[[str], str] = lambda w: w) -> Result | None:
    """Run one line of the walk-through as a shell would (``export`` updates ``env``, ``NAME=$(…)``
    keeps the output in ``values``), each word passed through ``substitute``; asserts exit code 0.
    Returns the command's result (None for an ``export``)."""
    captured = re.fullmatch(r"(?:export )?(\w+)=\$\((iris .*)\)", line)
    words = [substitute(re.sub(r"\$(\w+)", lambda m: values[m.group(1)], w))
             for w in shlex.split(captured.group(2) if captured else line)]
    if words[0] == "export":
        env.update(w.split("=", 1) for w in words[1:])
        return None
    assert words[0] == "iris", line
    # the documented URL is the default port; this server listens on a free one
    result = CliRunner().invoke(app, words[1:], env={**env, "IRIS_API_URL": url, "COLUMNS": "200"})
    assert result.exit_code == 0, (line, words, result.output)
    if captured:
        values[captured.group(1)] = result.stdout.strip()
        assert values[captured.group(1)] and "\n" not in values[captured.group(1)], (line, result.stdout)
    return result


def test_the_readme_walk_through_runs(tmp_path):
    lines = walk_through()
    assert len(lines) >= 15
    with LocalCoordinator(tmp_path) as coord:
        values = {"ADMIN_TOKEN": coord.admin_token}
        env: dict[str, str] = {}
        for line in lines:
            result = run_line(line, coord.url, values, env)
        with coord.client(values["TENANT_TOKEN"]) as tenant:
            res = tenant.get(f"/reservations/{values['ID']}")
        assert (res["lifecycle_state"], res["committed_version"]) == ("Terminated", 2), res
        assert result is not None and values["ID"] in result.output  # `iris list`, the last line, shows it
