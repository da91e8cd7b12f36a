"""Settings: one file (`tether.toml`) overridable by `TETHER_*` environment variables.

Precedence, highest first: constructor arguments, `TETHER_*` variables, `tether.toml`
in the working directory (or the file named by `TETHER_CONFIG`), then the defaults here.
Every field is flat so an operator maps it to one variable: `database_url` is
`TETHER_DATABASE_URL`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR = PACKAGE_ROOT / "governance" / "policies"
NOTIFY_SINKS = ("log", "feed", "webhook")


class Settings(BaseSettings):
    """Everything a worker, the CLI and the console need to find each other."""

    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="forbid")

    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field("tether", description="Task queue the workers poll.")
    database_url: str = Field(
        "sqlite:///.tether/tether.db",
        description="SQLAlchemy URL of the ledger and approvals store.",
    )
    policy_model: Path = Field(DEFAULT_POLICY_DIR / "model.conf", description="casbin model.")
    policy_path: Path = Field(DEFAULT_POLICY_DIR / "default.csv", description="casbin policy.")
    policy_source: Literal["file", "database"] = Field(
        "file",
        description="Where the policy in force lives: the files above, or the database "
        "store `tether policy push` writes to.",
    )
    policy_poll_seconds: float = Field(
        2.0, ge=0, description="How often a worker looks for a changed policy (0: never)."
    )
    model_script: Path = Field(
        PACKAGE_ROOT / "activities" / "scripts" / "demo.json",
        description="Script of the scripted model provider (the embedded default).",
    )
    state_dir: Path = Field(Path(".tether"), description="Local state of `tether dev`.")
    dev_port: int = Field(7233, description="gRPC port of the dev server `tether dev` starts.")
    dev_ui_port: int = Field(8233, description="Web UI port of that dev server.")
    log_level: str = Field("INFO", description="Python logging level of worker and CLI.")
    checkpoint_key: Path = Field(
        Path(".tether/keys/checkpoint.pem"),
        description="Ed25519 key that signs ledger checkpoints (created when absent).",
    )
    approval_key: Path = Field(
        Path(".tether/keys/approval.pem"),
        description="Ed25519 key the approving service (CLI, console) signs decisions with.",
    )
    approval_trusted_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Hex public keys whose signed approvals workers accept; empty: the public key "
            "of `approval_key` (one machine)."
        ),
    )
    approval_cap: int = Field(
        20, ge=1, description="Open approval requests per agent before the agent is paused."
    )
    approval_pause_seconds: int = Field(
        30, ge=1, description="How often a paused agent checks whether it may go on."
    )
    bank_settle_seconds: float = Field(
        0.0, description="Delay of the demo bank after a payment (simulates a slow bank)."
    )
    notify_sinks: list[str] = Field(
        default_factory=lambda: ["log", "feed"],
        description="Who is told of a notify-tier action: any of 'log', 'feed', 'webhook'.",
    )
    notify_webhook_url: str | None = Field(
        None, description="URL the 'webhook' sink POSTs each notification to."
    )
    notify_webhook_secret: SecretStr = Field(
        SecretStr(""), description="Shared secret that signs webhook bodies (HMAC-SHA256)."
    )
    review_window_seconds: int = Field(
        3600,
        gt=0,
        description="How long a notify-tier action may be flagged (a rule's timeout wins).",
    )

    @model_validator(mode="after")
    def _check_notify(self) -> Settings:
        unknown = [s for s in self.notify_sinks if s not in NOTIFY_SINKS]
        if unknown:
            raise ValueError(
                f"notify_sinks names {unknown[0]!r}, which is not a sink; "
                f"use any of {', '.join(NOTIFY_SINKS)}"
            )
        if "webhook" in self.notify_sinks:
            if not self.notify_webhook_url:
                raise ValueError(
                    "notify_sinks includes 'webhook' but notify_webhook_url is not set; "
                    "set TETHER_NOTIFY_WEBHOOK_URL or drop 'webhook'"
                )
            if not self.notify_webhook_url.startswith(("http://", "https://")):
                raise ValueError(
                    f"notify_webhook_url {self.notify_webhook_url!r} is not an http(s) URL"
                )
            if not self.notify_webhook_secret.get_secret_value():
                raise ValueError(
                    "notify_sinks includes 'webhook' but notify_webhook_secret is empty; "
                    "set TETHER_NOTIFY_WEBHOOK_SECRET to the secret the receiver verifies with"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("TETHER_CONFIG", "tether.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )
