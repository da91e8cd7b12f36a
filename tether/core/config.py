"""Settings: one file (`tether.toml`) overridable by `TETHER_*` environment variables.

Precedence, highest first: constructor arguments, `TETHER_*` variables, `tether.toml`
in the working directory (or the file named by `TETHER_CONFIG`), then the defaults here.
Every field is flat so an operator maps it to one variable: `database_url` is
`TETHER_DATABASE_URL`. A relative path (the `PATH_SETTINGS`, `[app] path`, a SQLite
file in `database_url`) starts at the configuration file's folder, not the working one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tether.core.gateway_config import ModelsConfig
from tether.core.mcp_config import McpConfig
from tether.core.paths import PATH_SETTINGS, config_file, project_dir, sqlite_url_beside
from tether.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_DIR = PACKAGE_ROOT / "governance" / "policies"
NOTIFY_SINKS = ("log", "feed", "webhook")


class AppConfig(BaseModel):
    """The author's app (`[app]` in `tether.toml`): what the worker, the dev stack, the CLI,
    replay and the console register. References are `module:Name`; `path` lists the
    folders (relative to the configuration file) put first on the import path."""

    model_config = ConfigDict(extra="forbid")

    path: list[Path] = Field(default_factory=lambda: [Path(".")])
    workflows: list[str] = Field(
        default_factory=list,
        description="Workflow classes, e.g. 'refunds.workflows:RefundWorkflow'.",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="Tool classes, objects or @tool functions, e.g. "
        "'refunds.activities:SupportTools'.",
    )
    demo: str = Field(
        "",
        description="The app's demo scenario for `tether demo`: 'module:function', an async "
        "function taking (settings, app, console) and returning an exit code.",
    )


class Settings(BaseSettings):
    """Everything a worker, the CLI and the console need to find each other."""

    # hide_input_in_errors: a validation error never echoes the input (it holds secrets).
    model_config = SettingsConfigDict(
        env_prefix="TETHER_", extra="forbid", hide_input_in_errors=True
    )

    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field("tether", description="Task queue the workers poll.")
    database_url: str = Field(
        "sqlite:///.tether/tether.db",
        description="SQLAlchemy URL of the ledger and approvals store.",
    )
    policy_model: Path = Field(DEFAULT_POLICY_DIR / "model.conf", description="casbin model.")
    policy_path: Path = Field(
        Path("policy.csv"), description="casbin policy rows (relative: to the config file)."
    )
    policy_source: Literal["file", "database"] = Field(
        "file",
        description="Where the policy in force lives: the files above, or the database "
        "store `tether policy push` writes to.",
    )
    policy_poll_seconds: float = Field(
        2.0, ge=0, description="How often a worker looks for a changed policy (0: never)."
    )
    model_script: Path | None = Field(
        None,
        description="Script of the scripted model provider (the embedded default; see "
        "docs/models.md); none: an empty script, every call must be scripted per run.",
    )
    app: AppConfig = Field(
        default_factory=AppConfig,
        description="The author's workflows and tools (`[app]`): registered everywhere.",
    )
    state_dir: Path = Field(Path(".tether"), description="Local state of `tether dev`.")
    dev_port: int = Field(7233, description="gRPC port of the dev server `tether dev` starts.")
    dev_ui_port: int = Field(8233, description="Web UI port of that dev server.")
    log_level: str = Field("INFO", description="Python logging level of worker and CLI.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Worker log lines: 'text', or 'json' (one object per line)."
    )
    telemetry_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Where OpenTelemetry traces and metrics go: nowhere, stdout, or OTLP.",
    )
    telemetry_otlp_endpoint: str = Field(
        "http://localhost:4318",
        description="OTLP/HTTP base URL of the collector (/v1/traces, /v1/metrics appended).",
    )
    telemetry_service_name: str = Field(
        "tether-worker", description="service.name of this process's telemetry."
    )
    telemetry_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces kept (children follow their parent)."
    )
    telemetry_metric_interval_seconds: float = Field(
        15.0, gt=0, description="How often metrics are exported."
    )
    telemetry_capture_content: bool = Field(
        False, description="Put prompts and model outputs in spans (they may be confidential)."
    )
    health_port: int = Field(
        0, ge=0, le=65535, description="Worker health endpoint (/livez, /readyz) port; 0: off."
    )
    health_host: str = Field("127.0.0.1", description="Address the health endpoint binds.")
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, how long running activities may finish before they are "
        "cancelled and handed back to Temporal.",
    )
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
    payload_codec: bool = Field(
        False,
        description="Seal every Temporal payload Tether writes (AES-256-GCM, see "
        "docs/sealed-payloads.md): history then holds no prompt, argument or output in clear.",
    )
    payload_key_file: Path = Field(
        Path(".tether/keys/payload.keys"),
        description="Payload keys, one '<id> <64 hex>' a line, the last sealing new payloads "
        "(created with one key when absent and payload_keys is empty).",
    )
    payload_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="More payload keys: key id to 64 hex digits (e.g. TETHER_PAYLOAD_KEYS).",
    )
    payload_key_current: str = Field(
        "", description="The key id that seals new payloads; empty: the last key listed."
    )
    payload_claim_check_bytes: int = Field(
        131072,
        ge=0,
        description="A sealed payload larger than this goes to the content store and history "
        "holds its digest (claim check); 0: never.",
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
    notify_outage_budget_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a failing webhook is retried (with backoff) before the "
        "notification is recorded as partly failed; a 4xx answer gives up at once.",
    )
    review_window_seconds: int = Field(
        3600,
        gt=0,
        description="How long a notify-tier action may be flagged (a rule's timeout wins).",
    )
    console_public_url: str = Field(
        "",
        description="The console's external base URL (e.g. https://tether.example.com): "
        "approval messages link to <console_public_url>/r/<token>.",
    )
    approval_link_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs the one-time links of approval messages (HMAC-SHA256); workers "
        "and console share it. Required when any approval message channel is set.",
    )
    approval_email_addresses: dict[str, str] = Field(
        default_factory=dict,
        description="Approval e-mail: person (e.g. 'user:alice') to address; each person "
        "of a request's approver role with an address gets a message with a personal link.",
    )
    approval_slack_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Approval messages to Slack: approver role to an incoming-webhook URL.",
    )
    approval_slack_channels: dict[str, str] = Field(
        default_factory=dict,
        description="Approval messages through Slack's Web API (chat.postMessage): an "
        "approver role (one message, every approver's link) or a person (their own link "
        "only) to a channel id, e.g. 'C0123ABCD'. Needs approval_slack_token.",
    )
    approval_slack_token: SecretStr = Field(
        SecretStr(""), description="The Slack bot token (xoxb-…, scope chat:write)."
    )
    approval_slack_api_url: str = Field(
        "https://slack.com/api", description="Slack's Web API base URL."
    )
    approval_webhooks: dict[str, str] = Field(
        default_factory=dict,
        description="Approval messages as signed JSON: approver role to a webhook URL.",
    )
    approval_webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs approval webhook bodies (HMAC-SHA256, like the notify webhook).",
    )
    approval_message_budget_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a failing approval message channel is retried (with backoff) "
        "before its failure is recorded; a 4xx answer gives up at once.",
    )
    smtp_host: str = Field("", description="SMTP server of approval e-mail; empty: none.")
    smtp_port: int = Field(587, ge=1, le=65535, description="Its port.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="STARTTLS, implicit TLS, or plain (a relay on this host)."
    )
    smtp_username: str = Field("", description="SMTP login; empty: no login.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password.")
    smtp_from: str = Field("tether@localhost", description="From address of approval e-mail.")
    models: ModelsConfig = Field(
        default_factory=ModelsConfig,
        description="Model endpoints (`[[models.endpoints]]`) and routing; none: the "
        "scripted provider answers.",
    )
    mcp: McpConfig = Field(
        default_factory=McpConfig,
        description="MCP servers (`[mcp.servers.<name>]`) whose tools are governed tools.",
    )
    console_host: str = Field("127.0.0.1", description="Address `tether console` binds.")
    console_port: int = Field(8400, ge=1, le=65535, description="Port `tether console` binds.")
    console_users: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Console sign-in: person (e.g. 'user:alice') to an argon2 password hash from "
            "`tether console hash-password`, or 'token-sha256:<hex>' of a per-user token."
        ),
    )
    console_session_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs console session cookies; empty: a random secret per process.",
    )
    console_session_seconds: int = Field(
        28800, gt=0, description="How long a console session lasts."
    )
    console_secure_cookies: bool = Field(
        True,
        description="Send the session cookie only over HTTPS (browsers also keep it for "
        "http://localhost); false only for a console reached over plain http elsewhere.",
    )
    console_login_attempts: int = Field(
        5, ge=1, description="Failed sign-ins per account within the window before a lock-out."
    )
    console_login_address_attempts: int = Field(
        20, ge=1, description="Failed sign-ins per client address within the window."
    )
    console_login_window_seconds: int = Field(
        900, ge=1, description="The sliding window the sign-in limits count over."
    )
    console_oidc_issuer: str = Field(
        "",
        description="OpenID Connect provider for console sign-in (its issuer URL, https); "
        "empty: no OIDC sign-in.",
    )
    console_oidc_client_id: str = Field("", description="The console's client id there.")
    console_oidc_client_secret: SecretStr = Field(
        SecretStr(""), description="The client's secret; empty: a public client (PKCE only)."
    )
    console_oidc_claim: str = Field(
        "email", description="The ID token claim that names the person (as user:<value>)."
    )
    console_oidc_scopes: str = Field("openid email profile", description="Scopes asked for.")
    console_proxy_header: str = Field(
        "",
        description="Header naming the signed-in person, set by a trusted reverse proxy "
        "(OIDC in front); empty: no proxy sign-in.",
    )
    console_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) whose console_proxy_header is believed.",
    )
    console_kill_roles: list[str] = Field(
        default_factory=lambda: ["role:ops"],
        description="Policy roles (g2 rows) whose holders may use the console's kill switch.",
    )
    console_auditor_roles: list[str] = Field(
        default_factory=list,
        description="Policy roles that may see runs and evidence; empty: every signed-in person.",
    )
    console_content_roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Data class (confidential, restricted) to the policy roles cleared to read "
        "model prompts and outputs of that class on a request page; public and internal "
        "content is shown to everyone who may see the request; an unlisted class to nobody.",
    )
    console_codec_origins: list[str] = Field(
        default_factory=list,
        description="Origins (e.g. http://localhost:8080, the Temporal UI) allowed to call the "
        "console's codec endpoint /codec/decode from a browser.",
    )
    console_checkpoint_dir: Path = Field(
        Path(".tether/checkpoints"),
        description="Where signed checkpoints are kept (the scheduled ones too); the console "
        "verifies against the newest.",
    )
    audit_trusted_keys: list[str] = Field(
        default_factory=list,
        description="Checkpoint signing keys an auditor pins (16-hex key ids or 64-hex public "
        "keys); every verifying command and the console check signatures against them.",
    )
    audit_trust_file: Path | None = Field(
        None,
        description="A trust file of pinned keys with roles and validity periods (rotation).",
    )
    audit_witness_keys: list[str] = Field(
        default_factory=list,
        description="Witness keys whose cosignature `verify --against` requires (one of them).",
    )
    checkpoint_every_seconds: float = Field(
        0.0,
        ge=0,
        description="A Temporal Schedule signs a checkpoint this often when the ledger grew "
        "(0: no schedule); written to console_checkpoint_dir.",
    )
    checkpoint_every_events: int = Field(
        0,
        ge=0,
        description="Also sign when this many events are not yet covered (0: time only); "
        "checked every checkpoint_check_seconds.",
    )
    checkpoint_check_seconds: float = Field(
        0.0,
        ge=0,
        description="How often the schedule looks (0: checkpoint_every_seconds).",
    )
    checkpoint_witnesses: list[str] = Field(
        default_factory=list,
        description="URLs of witnesses (`tether witness`) asked to cosign each scheduled "
        "checkpoint.",
    )

    @model_validator(mode="after")
    def _project_paths(self) -> Settings:
        """Files and folders named relative to the configuration file are found beside it,
        whatever the working directory: every path setting, the app's import path, and a
        SQLite database file."""
        base = project_dir()
        for name in PATH_SETTINGS:
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                object.__setattr__(self, name, base / value)
        self.app.path = [p if p.is_absolute() else base / p for p in self.app.path]
        object.__setattr__(self, "database_url", sqlite_url_beside(self.database_url, base))
        return self

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        secret = self.console_session_secret.get_secret_value()
        if secret and (len(secret) < 32 or secret.lower().startswith("change-me")):
            raise ValueError(
                "console_session_secret is too weak to sign sessions (anyone who guesses it "
                "can sign in as anyone): set TETHER_CONSOLE_SESSION_SECRET to at least 32 "
                "random characters, e.g. the output of 'openssl rand -hex 32'"
            )
        return self

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
            webhook_secret = self.notify_webhook_secret.get_secret_value()
            if webhook_secret and (
                len(webhook_secret) < 16 or webhook_secret.lower().startswith("change-me")
            ):
                raise ValueError(
                    "notify_webhook_secret is too weak to sign webhooks: set "
                    "TETHER_NOTIFY_WEBHOOK_SECRET to at least 16 random characters (the "
                    "receiver verifies with the same), e.g. 'openssl rand -hex 32'"
                )
            if not webhook_secret:
                raise ValueError(
                    "notify_sinks includes 'webhook' but notify_webhook_secret is empty; "
                    "set TETHER_NOTIFY_WEBHOOK_SECRET to the secret the receiver verifies with"
                )
        return self

    @model_validator(mode="after")
    def _check_messages(self) -> Settings:
        channels = {
            "approval_email_addresses": bool(self.approval_email_addresses),
            "approval_slack_webhooks": bool(self.approval_slack_webhooks),
            "approval_slack_channels": bool(self.approval_slack_channels),
            "approval_webhooks": bool(self.approval_webhooks),
        }
        used = [name for name, on in channels.items() if on]
        if not used:
            return self
        secret = self.approval_link_secret.get_secret_value()
        if len(secret) < 32 or secret.lower().startswith("change-me"):
            raise ValueError(
                f"{used[0]} is set but approval_link_secret is missing or too weak to sign "
                "links: set TETHER_APPROVAL_LINK_SECRET (the same on workers and console) to "
                "at least 32 random characters, e.g. 'openssl rand -hex 32'"
            )
        if not self.console_public_url.startswith(("http://", "https://")):
            raise ValueError(
                f"{used[0]} is set but console_public_url {self.console_public_url!r} is not "
                "an http(s) URL; set TETHER_CONSOLE_PUBLIC_URL to the console's address"
            )
        if self.approval_email_addresses and not self.smtp_host:
            raise ValueError(
                "approval_email_addresses is set but smtp_host is empty; set TETHER_SMTP_HOST"
            )
        if self.approval_slack_channels and not self.approval_slack_token.get_secret_value():
            raise ValueError(
                "approval_slack_channels is set but approval_slack_token is empty; set "
                "TETHER_APPROVAL_SLACK_TOKEN to the Slack app's bot token (xoxb-…)"
            )
        if not self.approval_slack_api_url.startswith(("http://", "https://")):
            raise ValueError(
                f"approval_slack_api_url {self.approval_slack_api_url!r} is not an http(s) "
                "URL; leave it unset for Slack's own"
            )
        urls = [u.get_secret_value() for u in self.approval_slack_webhooks.values()]
        for url in [*urls, *self.approval_webhooks.values()]:
            if not url.startswith(("http://", "https://")):
                raise ValueError("an approval webhook URL is not an http(s) URL; fix it")
        if self.approval_webhooks:
            hook = self.approval_webhook_secret.get_secret_value()
            if len(hook) < 16 or hook.lower().startswith("change-me"):
                raise ValueError(
                    "approval_webhooks is set but approval_webhook_secret is missing or too "
                    "weak: set TETHER_APPROVAL_WEBHOOK_SECRET to at least 16 random characters"
                )
        return self

    @model_validator(mode="after")
    def _check_telemetry(self) -> Settings:
        if self.telemetry_exporter == "otlp" and not self.telemetry_otlp_endpoint.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"telemetry_otlp_endpoint {self.telemetry_otlp_endpoint!r} is not an http(s) "
                "URL; give the collector's OTLP/HTTP address, e.g. http://otel-collector:4318"
            )
        return self

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
        issuer = self.console_oidc_issuer
        if not issuer:
            return self
        parsed = urlsplit(issuer)
        local = parsed.hostname in ("localhost", "127.0.0.1", "::1")
        if parsed.scheme != "https" and not (parsed.scheme == "http" and local):
            raise ValueError(
                f"console_oidc_issuer is {issuer!r}; name the provider's https issuer URL "
                "(plain http only for a provider on this machine)"
            )
        if not self.console_oidc_client_id:
            raise ValueError(
                "console_oidc_issuer is set but console_oidc_client_id is empty; register "
                "the console with the provider and set its client id"
            )
        return self

    @model_validator(mode="after")
    def _check_console(self) -> Settings:
        for person, credential in self.console_users.items():
            if person.startswith("agent:") or ":" not in person:
                raise ValueError(
                    f"console_users names {person!r}; name people like 'user:alice' "
                    "(agent identities never sign in)"
                )
            token = credential.removeprefix("token-sha256:")
            if not credential.startswith("$argon2") and not (
                token != credential and len(token) == 64 and token.strip("0123456789abcdef") == ""
            ):
                raise ValueError(
                    f"console_users[{person!r}] is neither an argon2 hash nor "
                    "'token-sha256:<64 hex>'; make one with `tether console hash-password`"
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
        toml_file = config_file()
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings() -> Settings:
    """Settings from the file and the environment; a bad value raises ConfigError with one
    line naming it (never the value: it may be a secret)."""
    try:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {str(config_file())!r} is not valid TOML ({exc}); fix it or "
            "point TETHER_CONFIG at another file"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"configuration is invalid: {first['msg']}" + (f" ({where})" if where else "")
        ) from None
