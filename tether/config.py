"""Settings: one file (`tether.toml`) overridable by `TETHER_*` environment variables.

Precedence, highest first: constructor arguments, `TETHER_*` variables, `tether.toml`
in the working directory (or the file named by `TETHER_CONFIG`), then the defaults here.
Every field is flat so an operator maps it to one variable: `database_url` is
`TETHER_DATABASE_URL`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR = PACKAGE_ROOT / "governance" / "policies"


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
    bank_settle_seconds: float = Field(
        0.0, description="Delay of the demo bank after a payment (simulates a slow bank)."
    )

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
