"""Pinned trust: the keys an auditor accepts signatures from, and when.

A checkpoint or a bundle carries its signer's public key, so a signature alone proves
only that *someone* signed. An auditor pins the keys they trust — key ids or public keys
given on the command line (`--trust-key`), in settings (`audit_trusted_keys`), or in a
trust file (`--trust-file`, `audit_trust_file`) — and every verifying command checks the
signer against them, failing when nothing is pinned.

A trust file lists keys with optional validity periods, so a rotated key stays trusted
for what it signed while it was current::

    {"keys": [
      {"public_key": "9a…", "role": "log", "not_after": "2026-06-01T00:00:00+00:00"},
      {"public_key": "c0…", "not_before": "2026-06-01T00:00:00+00:00"},
      {"public_key": "77…", "role": "witness", "name": "witness-1"}
    ]}

`role` is `log` (signs checkpoints and bundles) or `witness` (cosigns checkpoints).
Times are ISO 8601 and compared with the signature's own time, which the signer states:
a period limits what an honest key holder signed, not what a thief of the key can claim.
Pure: reading a file is the only I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, model_validator

from tether.errors import CheckpointError

Role = Literal["log", "witness"]
_HEX = re.compile(r"^[0-9a-f]+$")


def key_id_of(public_hex: str) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key (as checkpoints name it)."""
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def _when(value: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CheckpointError(f"{what} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise CheckpointError(f"{what} {value!r} has no time zone; add +00:00")
    return parsed


class PinnedKey(BaseModel):
    """One trusted key: its id (always), its public key (when known), role and period."""

    key_id: str = ""
    public_key: str = ""
    """Hex raw Ed25519 public key; when set, the signer's public key must equal it."""
    role: Role = "log"
    name: str = ""
    not_before: str = ""
    not_after: str = ""

    @model_validator(mode="after")
    def _complete(self) -> PinnedKey:
        if self.public_key:
            if not _HEX.match(self.public_key) or len(self.public_key) != 64:
                raise ValueError(f"public_key {self.public_key!r} is not 64 lowercase hex digits")
            derived = key_id_of(self.public_key)
            if self.key_id and self.key_id != derived:
                raise ValueError(f"key_id {self.key_id!r} is not the id of its public_key")
            self.key_id = derived
        if not self.key_id or not _HEX.match(self.key_id) or len(self.key_id) != 16:
            raise ValueError(f"key_id {self.key_id!r} is not 16 lowercase hex digits")
        for field in ("not_before", "not_after"):
            if getattr(self, field):
                _when(getattr(self, field), field)
        return self

    def covers(self, signed_at: str) -> str:
        """ "" when `signed_at` is inside this key's period; otherwise why not."""
        if not (self.not_before or self.not_after):
            return ""
        at = _when(signed_at, "the signing time")
        if self.not_before and at < _when(self.not_before, "not_before"):
            return (
                f"key {self.key_id!r} signed at {signed_at}, before it became valid "
                f"({self.not_before})"
            )
        if self.not_after and at >= _when(self.not_after, "not_after"):
            return (
                f"key {self.key_id!r} signed at {signed_at}, after it was retired "
                f"({self.not_after})"
            )
        return ""


class TrustFile(BaseModel):
    keys: list[PinnedKey]


def parse_pin(value: str, role: Role = "log") -> PinnedKey:
    """`--trust-key VALUE`: a 16-hex key id or a 64-hex public key."""
    text = value.strip().lower()
    try:
        if len(text) == 64:
            return PinnedKey(public_key=text, role=role)
        return PinnedKey(key_id=text, role=role)
    except ValidationError:
        raise CheckpointError(
            f"pinned key {value!r} is neither a 16-hex key id nor a 64-hex public key; "
            "copy it from 'tether audit key' run where the key lives"
        ) from None


def read_trust_file(path: Path) -> list[PinnedKey]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read trust file {str(path)!r}: {exc.strerror}") from None
    try:
        return TrustFile.model_validate_json(raw).keys
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(
            f"trust file {str(path)!r} is not valid: {where}: {first['msg']}"
        ) from None


class Trust:
    """The pinned keys one verification accepts."""

    def __init__(self, keys: Iterable[PinnedKey]) -> None:
        self.keys = list(keys)

    @classmethod
    def gather(
        cls,
        pins: Iterable[str] = (),
        files: Iterable[Path] = (),
        witness_pins: Iterable[str] = (),
    ) -> Trust:
        keys = [parse_pin(p) for p in pins]
        keys += [parse_pin(p, "witness") for p in witness_pins]
        for path in files:
            keys += read_trust_file(path)
        return cls(keys)

    def of(self, role: Role) -> list[PinnedKey]:
        return [k for k in self.keys if k.role == role]

    def require(self, role: Role = "log") -> None:
        if not self.of(role):
            raise CheckpointError(
                "no pinned key to verify signatures against: pass --trust-key KEY_ID (or "
                "--trust-file FILE), or set audit_trusted_keys; get the key id from whoever "
                "signs, out of band ('tether audit key')"
            )

    def check(self, key_id: str, public_key: str, signed_at: str, role: Role = "log") -> str:
        """ "" when a pinned key of `role` is this signer and covers `signed_at`."""
        matches = [k for k in self.of(role) if k.key_id == key_id]
        if not matches:
            what = "checkpoints" if role == "log" else "cosignatures"
            return f"signed by key {key_id!r}, which is not pinned for {what}"
        problems: list[str] = []
        for k in matches:
            if k.public_key and k.public_key != public_key:
                problems.append(f"key {key_id!r} carries a public key other than the pinned one")
                continue
            problem = k.covers(signed_at)
            if not problem:
                return ""
            problems.append(problem)
        return problems[0]
