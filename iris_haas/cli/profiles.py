"""Where the CLI finds its coordinator: flags, then environment variables, then a profile of the
configuration file, then the defaults.

The file (``$IRIS_CONFIG``, else ``$XDG_CONFIG_HOME/iris/config.toml``, else
``~/.config/iris/config.toml``) holds named profiles, as OpenStack's clouds.yaml holds clouds::

    [profiles.prod]
    url = "https://iris.example.net:8642"
    token = "..."
    ca_file = "prod-ca.crt"     # relative to the file's directory

``--profile NAME`` (or ``IRIS_PROFILE``) picks one; without it no file is read. The file holds
tokens: it should be readable by its owner only (a warning says so otherwise).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iris_haas.contract.config import ConfigError, describe, read_toml
from iris_haas.contract.types import Name

DEFAULT_URL = "http://127.0.0.1:8642"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, pattern=r"^https?://\S+$", description="the coordinator's URL")
    token: str | None = Field(default=None, min_length=1, description="an API token (admin or tenant)")
    ca_file: Path | None = Field(default=None, description="the CA of an https:// coordinator's certificate")


class CliConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profiles: dict[Name, Profile] = {}


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    ca_file: Path | None


def config_path() -> Path:
    if given := os.environ.get("IRIS_CONFIG"):
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "iris" / "config.toml"


def load_profile(name: str, path: Path | None = None) -> tuple[Profile, list[str]]:
    """The profile ``name`` of the file (its ``ca_file`` made absolute), and warnings to show."""
    path = path or config_path()
    if not path.exists():
        raise ConfigError(f"--profile {name}: there is no configuration file {path} (or set IRIS_CONFIG)")
    try:
        config = CliConfig.model_validate(read_toml(path))
    except ValidationError as e:
        raise describe(e, str(path)) from None
    if name not in config.profiles:
        have = ", ".join(sorted(config.profiles)) or "none"
        raise ConfigError(f"--profile {name}: no [profiles.{name}] in {path} (profiles: {have})")
    profile = config.profiles[name]
    if profile.ca_file is not None:
        profile = profile.model_copy(update={"ca_file": path.parent / profile.ca_file.expanduser()})
    warnings = []
    if profile.token and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path} holds a token and others may read it: chmod 600 {path}")
    return profile, warnings


def resolve(url: str | None, token: str | None, ca_file: Path | None, profile: Profile | None) -> Connection:
    """Flags and variables (typer already merged those) over the profile over the defaults."""
    p = profile or Profile()
    return Connection(url or p.url or DEFAULT_URL, token or p.token, ca_file or p.ca_file)
