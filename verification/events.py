"""What the ledger holds, apart from how it is stored: event models and the canonical JSON
and digests that hash them.

Pure and deterministic (pydantic and hashlib only, no SQLAlchemy, no clock): workflows
import this module to build the events and digests their activities record.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, Field, JsonValue

GENESIS = "0" * 64


class LedgerEvent(BaseModel):
    """What a caller appends."""

    idempotency_key: str
    kind: str
    workflow_id: str = ""
    run_id: str = ""
    step: int | None = None
    agent: str = ""
    action: str = ""
    resource: str = ""
    tier: str = ""
    rule: str = ""
    policy_version: str = ""
    actor: str = ""
    outcome: str = ""
    payload: dict[str, JsonValue] = Field(default_factory=dict)


class RecordedEvent(LedgerEvent):
    """An event as stored, with its place in the chain."""

    seq: int
    recorded_at: str
    prev_hash: str
    hash: str


def canonical_json(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: JsonValue) -> str:
    """SHA-256 of the canonical JSON of `value`, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()
