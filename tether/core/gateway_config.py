"""Model gateway settings: the `[models]` table of `tether.toml`.

    [[models.endpoints]]
    name = "vllm-onprem"
    base_url = "http://gpu-1:8000/v1"
    model = "qwen2.5-32b-instruct"
    private = true
    data_classes = ["public", "internal", "confidential"]

    [[models.endpoints]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
    input_usd_per_million = 0.15
    output_usd_per_million = 0.60

No endpoint configured: the scripted provider (the embedded default) answers. A secret is
never in this file: `api_key_env` names the environment variable that holds it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATA_CLASSES = ("public", "internal", "confidential", "restricted")
"""Every data class (a call's `sensitivity`), least to most sensitive."""
PRIVATE_ONLY = ("confidential", "restricted")
"""Data classes only a private (on-premise) endpoint may ever receive."""
CALL_MODEL_TIMEOUT_SECONDS = 60.0
"""start_to_close timeout of the `call_model` activity (`workflows.agent`)."""


def check_data_class(value: str, what: str = "data class") -> str:
    """`value` when it is a known data class; else a ValueError naming the allowed ones."""
    if value not in DATA_CLASSES:
        raise ValueError(
            f"unknown {what} {value!r}; use one of {', '.join(DATA_CLASSES)} (lower case)"
        )
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class EndpointConfig(BaseModel):
    """One OpenAI-compatible chat completions endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url: str
    """Up to and including the version path, e.g. `http://localhost:11434/v1`."""
    model: str
    api_key_env: str = ""
    """Name of the environment variable holding the API key; empty: no key is sent."""
    auth_header: Literal["authorization", "api-key"] = "authorization"
    """`authorization` sends `Bearer <key>`; `api-key` (Azure OpenAI) sends the key itself."""
    query: dict[str, str] = Field(default_factory=dict)
    """Query parameters added to every request (Azure OpenAI: `api-version`)."""
    private: bool = False
    """On-premise: the only kind that may receive confidential data."""
    data_classes: list[str] = Field(default_factory=lambda: ["public", "internal"])
    """Sensitivities this endpoint may receive."""
    tasks: list[str] = Field(default_factory=list)
    """Task types it serves; empty: every task."""
    input_usd_per_million: float = Field(0.0, ge=0)
    output_usd_per_million: float = Field(0.0, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)
    """Whole-call limit, including a stalled body or stream."""
    connect_timeout_seconds: float = Field(5.0, gt=0)
    max_concurrency: int = Field(16, ge=1)
    max_response_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """A larger body is abandoned mid-read and the call fails over."""
    stream: bool = False
    """Read the answer as server-sent events (a stalled stream is noticed per chunk)."""
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How a schema is asked for: `response_format` json_schema, json_object, or not at all."""
    priority: int = 0
    """Lower is preferred when cost and latency tie."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"endpoint name {value!r} must be 1-63 letters, digits, '_', '.' or '-'"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url {value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("data_classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        for data_class in value:
            check_data_class(data_class, "data class in data_classes")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                f"api_key_env {value!r} must name an environment variable (the key itself "
                "never goes in the configuration)"
            )
        return value

    @model_validator(mode="after")
    def _private_only(self) -> EndpointConfig:
        leaked = [c for c in self.data_classes if c in PRIVATE_ONLY]
        if leaked and not self.private:
            raise ValueError(
                f"endpoint {self.name!r} is not private but lists data class {leaked[0]!r}; "
                "only private (on-premise) endpoints may receive it: set private = true or "
                "remove the class"
            )
        return self


class ModelsConfig(BaseModel):
    """Endpoints and how calls are routed among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[EndpointConfig] = Field(default_factory=list)
    latency_target_ms: int = Field(0, ge=0)
    """Default latency target of a call (0: none); endpoints slower than it rank last."""
    max_attempts: int = Field(4, ge=1)
    """HTTP attempts per call across endpoints, before the activity fails (and Temporal
    retries it)."""
    breaker_failures: int = Field(3, ge=1)
    """Consecutive failures that open an endpoint's circuit breaker."""
    breaker_reset_seconds: float = Field(30.0, gt=0)
    """How long an open breaker stays open before one probe call is let through."""
    call_timeout_seconds: float = Field(50.0, gt=0)
    """A call (every attempt, slot wait and Retry-After wait) ends after this long; it
    must stay below the `call_model` activity's 60 s."""
    max_retry_after_seconds: float = Field(5.0, ge=0)
    """A 429 asking for a wait up to this long is waited out when no other endpoint is
    eligible; a longer one is not (the call fails over or fails)."""
    outage_budget_seconds: float = Field(3600.0, ge=0)
    """How long a run waits out an outage of every eligible endpoint (retrying with
    backoff, waiting for the breakers' probes) before its model call fails
    `ModelUnavailable`."""
    outage_budgets: dict[str, float] = Field(default_factory=dict)
    """Outage budget per task kind (the `task` of `ask`), overriding the one above."""

    def outage_budget(self, task: str) -> float:
        """The outage budget of calls for `task`, in seconds."""
        return self.outage_budgets.get(task, self.outage_budget_seconds)

    @model_validator(mode="after")
    def _within_activity(self) -> ModelsConfig:
        if self.call_timeout_seconds >= CALL_MODEL_TIMEOUT_SECONDS:
            raise ValueError(
                f"call_timeout_seconds = {self.call_timeout_seconds} must be below the "
                f"call_model activity's start_to_close timeout of "
                f"{CALL_MODEL_TIMEOUT_SECONDS:g} s (leave a few seconds for the answer)"
            )
        return self

    @model_validator(mode="after")
    def _unique(self) -> ModelsConfig:
        seen: set[str] = set()
        for endpoint in self.endpoints:
            if endpoint.name in seen:
                raise ValueError(f"two endpoints are named {endpoint.name!r}; rename one")
            seen.add(endpoint.name)
        return self
