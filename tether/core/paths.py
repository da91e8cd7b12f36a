"""Where the configuration lives, and where its relative paths start.

`config_file()` is the file settings are read from (`TETHER_CONFIG`, else `tether.toml`
in the working directory); `project_dir()` is its folder, where every relative path of
the settings starts (`PATH_SETTINGS`, `[app] path`, a SQLite file: `sqlite_url_beside`).
Plain functions over the environment and the file system; ConfigError for a
`TETHER_CONFIG` that names no file.
"""

from __future__ import annotations

import os
from pathlib import Path

from tether.errors import ConfigError


def config_file() -> Path:
    """The configuration file in use: `TETHER_CONFIG`, else `tether.toml` here (which may
    be absent: then the defaults and `TETHER_*` variables are all there is).

    A `TETHER_CONFIG` that names no file raises ConfigError: a typo there would otherwise
    run everything on defaults, against the wrong database and policy.
    """
    named = os.environ.get("TETHER_CONFIG")
    if not named:  # unset or empty
        return Path("tether.toml")
    path = Path(named)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no file"
        raise ConfigError(
            f"TETHER_CONFIG is {named!r}, which is {what}; point it at your tether.toml, "
            "or unset it to read ./tether.toml"
        )
    return path


def project_dir() -> Path:
    """The folder relative project paths start from: the configuration file's, or the
    working directory when there is no file."""
    file = config_file()
    return file.resolve().parent if file.is_file() else Path.cwd()


PATH_SETTINGS = (
    "policy_model",
    "policy_path",
    "model_script",
    "state_dir",
    "checkpoint_key",
    "approval_key",
    "payload_key_file",
    "console_checkpoint_dir",
    "audit_trust_file",
)
"""The settings that name a file or folder: a relative one starts at `project_dir()`."""


def sqlite_url_beside(url: str, base: Path) -> str:
    """`url` with a relative SQLite file made absolute under `base`; any other URL (an
    absolute file, `:memory:`, a `file:` URI, another database) as it is."""
    prefix, sep, rest = url.partition(":///")
    if not sep or prefix.split("+")[0] != "sqlite":
        return url
    database, query_sep, query = rest.partition("?")
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    if Path(database).is_absolute():
        return url
    return f"{prefix}:///{base / database}{query_sep}{query}"
