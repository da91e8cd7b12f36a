"""Settings: tether.toml, overridden by TETHER_* variables; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tether.core.config import Settings, load_settings
from tether.core.db import make_engine
from tether.core.paths import sqlite_url_beside
from tether.errors import ConfigError
from tether.verification.ledger import Ledger


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tether.toml").write_text('task_queue = "from-toml"\ndev_port = 7999\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TETHER_CONFIG")  # the tether.toml of the working directory
    assert Settings().task_queue == "from-toml"
    assert Settings().dev_port == 7999
    monkeypatch.setenv("TETHER_TASK_QUEUE", "from-env")
    assert Settings().task_queue == "from-env"
    assert Settings(task_queue="explicit").task_queue == "explicit"


def test_config_file_named_by_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "prod.toml"
    other.write_text('database_url = "postgresql+psycopg://tether@db/tether"\n')
    monkeypatch.setenv("TETHER_CONFIG", str(other))
    assert Settings().database_url.startswith("postgresql+psycopg://")


def test_unknown_and_invalid_keys_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TETHER_CONFIG")  # the tether.toml of the working directory
    (tmp_path / "tether.toml").write_text('task_queu = "typo"\n')
    with pytest.raises(ValidationError, match="task_queu"):
        Settings()
    (tmp_path / "tether.toml").write_text('dev_port = "seven"\n')
    with pytest.raises(ValidationError, match="dev_port"):
        Settings()


def test_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parent.parent / "tether.example.toml"
    monkeypatch.setenv("TETHER_CONFIG", str(example))
    settings = Settings()
    assert settings.task_queue == "tether" and settings.dev_ui_port == 8233


@pytest.mark.parametrize(
    ("field", "value", "extra"),
    [
        ("console_session_secret", "change-me-console-session-0123456789", {}),
        ("console_session_secret", "short", {}),
        (
            "notify_webhook_secret",
            "change-me-webhook",
            {"notify_sinks": ["webhook"], "notify_webhook_url": "https://hooks.example/t"},
        ),
    ],
)
def test_weak_secrets_are_refused(field: str, value: str, extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=f"{field} is too weak") as refused:
        Settings(**{field: value, **extra})  # type: ignore[arg-type]
    assert "openssl rand -hex 32" in str(refused.value)
    assert value not in str(refused.value)  # the secret itself is never echoed
    strong = "0f" * 16
    assert Settings(**{field: strong, **extra}).model_dump()[field]  # type: ignore[arg-type]


def test_relative_paths_start_at_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from any folder, a project's relative paths (its database file and key files
    included) are the ones beside its tether.toml, and so are the defaults."""
    project = (tmp_path / "project").resolve()
    project.mkdir()
    config = project / "tether.toml"
    config.write_text(
        'database_url = "sqlite:///data/ledger.db"\nstate_dir = "state"\n'
        'checkpoint_key = "keys/cp.pem"\napproval_key = "keys/ap.pem"\n'
        'console_checkpoint_dir = "checkpoints"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TETHER_CONFIG", str(config))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{project / 'data' / 'ledger.db'}"
    assert settings.state_dir == project / "state"
    assert settings.checkpoint_key == project / "keys" / "cp.pem"
    assert settings.approval_key == project / "keys" / "ap.pem"
    assert settings.console_checkpoint_dir == project / "checkpoints"
    assert Ledger(make_engine(settings.database_url)).verify().ok
    assert (project / "data" / "ledger.db").is_file() and not any(elsewhere.iterdir())

    config.write_text("")
    defaults = Settings()
    assert defaults.database_url == f"sqlite:///{project / '.tether' / 'tether.db'}"
    assert defaults.state_dir == project / ".tether"
    assert defaults.approval_key == project / ".tether" / "keys" / "approval.pem"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:////var/lib/tether/tether.db",
        "sqlite:///file:ledger?mode=memory&uri=true",
        "postgresql+psycopg://tether:pw@db/tether",
    ],
)
def test_other_database_urls_are_left_alone(url: str) -> None:
    assert sqlite_url_beside(url, Path("/project")) == url


def test_a_relative_sqlite_url_keeps_its_driver_and_query() -> None:
    assert (
        sqlite_url_beside("sqlite+pysqlite:///db/t.db?timeout=5", Path("/project"))
        == "sqlite+pysqlite:////project/db/t.db?timeout=5"
    )


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_config_variable_naming_no_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    named = tmp_path / ("absent.toml" if kind == "missing" else "")
    monkeypatch.setenv("TETHER_CONFIG", str(named))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert f"TETHER_CONFIG is {str(named)!r}" in message and "unset it" in message
    assert ("a folder" if kind == "folder" else "no file") in message


def test_an_empty_config_variable_is_no_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tether.toml").write_text('task_queue = "from-here"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TETHER_CONFIG", "")  # e.g. ${TETHER_CONFIG:-} in a compose file
    assert Settings().task_queue == "from-here"
