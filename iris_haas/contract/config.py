"""Configuration files (TOML), read the same way by the coordinator, the agents and the CLI.

A daemon that starts on a mistyped key would run on a default the operator never chose, so every
file is checked whole before anything starts: an unknown key, a value of the wrong type or out of
range is a :class:`ConfigError` that names the file and the key (``iris`` prints it and exits 2).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from iris_haas.contract.errors import IrisError


class ConfigError(IrisError):
    """A configuration file or setting that cannot be used as it is: nothing was started."""

    status, type = 400, "ConfigError"


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table, or a ConfigError saying why it cannot be read (missing, unreadable, not TOML)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def check_keys(data: dict[str, Any], allowed: Iterable[str], where: str, section: str = "") -> None:
    """Refuse keys that no setting has, suggesting the one probably meant."""
    known = sorted(allowed)
    for key in data:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {section}{key!r}{hint}")


def describe(e: ValidationError, where: str, name: Callable[[str], str] = str) -> ConfigError:
    """A pydantic error as one ConfigError naming each bad key (``where``: the file or 'environment';
    ``name`` spells a key as the operator wrote it, e.g. ``IRIS_PORT`` for ``port``)."""
    lines = []
    for err in e.errors():
        key = name(".".join(str(p) for p in err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}")
        else:
            lines.append(f"{where}: {key}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError("; ".join(lines))


def file_model(model: type[BaseModel]) -> type[BaseModel]:
    """A plain model with ``model``'s fields, defaults and constraints that reads nothing but its input
    and refuses unknown keys: a settings file is validated on its own, before the environment."""
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in model.model_fields.items()}
    return create_model(f"{model.__name__}File", __config__=ConfigDict(extra="forbid"), **fields)
