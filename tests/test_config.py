"""Settings: tether.toml, overridden by TETHER_* variables; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tether.core.config import Settings


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
