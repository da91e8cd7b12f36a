"""A witness: keeps the last tree head it saw of each log and cosigns only a consistent
successor (the transparency-log witness model).

A log (the party signing checkpoints) can show different auditors different ledgers, or
roll its ledger back and sign again. A witness it does not control sees every checkpoint
before it is published and remembers the newest: it refuses a checkpoint that is smaller
(a shrunk tree), of the same size with another root (a fork), or larger but not an
append-only extension (the log must send a consistency proof from the witness's head).
An auditor who pins the witness's key and accepts only cosigned checkpoints is protected
from a log that forks or rewrites history, unless log and every pinned witness collude.

`Witness.cosign` is the whole decision; the state file (JSON, written atomically before
a cosignature is returned) is the only I/O. `tether witness` serves it over HTTP.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field, ValidationError

from tether.errors import CheckpointError
from tether.verification import merkle
from tether.verification.checkpoint import Checkpoint, Cosignature, cosign, verify_pinned
from tether.verification.trust import Trust


class SeenHead(BaseModel):
    size: int
    root: str
    signed_at: str


class WitnessState(BaseModel):
    heads: dict[str, SeenHead] = Field(default_factory=dict)
    """The newest tree head cosigned, by the log's key id."""


class CosignRequest(BaseModel):
    checkpoint: Checkpoint
    proof: list[str] = Field(default_factory=list)
    """Consistency proof (hex) from the witness's head of this log to the checkpoint."""


class WitnessRefused(CheckpointError):
    """The witness will not cosign: the reason says which rule the checkpoint broke."""


class Witness:
    """Thread-safe: one cosignature at a time, each persisted before it is returned."""

    def __init__(self, key: Ed25519PrivateKey, state_path: Path, logs: Trust) -> None:
        logs.require()
        self.key = key
        self.state_path = state_path
        self.logs = logs
        self._lock = threading.Lock()
        self.state = self._load()

    def _load(self) -> WitnessState:
        if not self.state_path.exists():
            return WitnessState()
        try:
            return WitnessState.model_validate_json(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise CheckpointError(
                f"witness state {str(self.state_path)!r} cannot be read ({exc}); restore it "
                "from a backup: starting empty would cosign a rolled-back log"
            ) from None

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(self.state.model_dump_json(indent=2), encoding="utf-8")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(self.state_path)

    def head(self, log_key_id: str) -> SeenHead | None:
        with self._lock:
            return self.state.heads.get(log_key_id)

    def cosign(self, request: CosignRequest) -> Cosignature:
        """The cosignature of a consistent successor; WitnessRefused naming why not."""
        cp = request.checkpoint
        problem = verify_pinned(cp, self.logs)
        if problem:
            raise WitnessRefused(problem)
        with self._lock:
            seen = self.state.heads.get(cp.key_id)
            if seen is not None:
                self._check_successor(seen, cp, request.proof)
            self.state.heads[cp.key_id] = SeenHead(
                size=cp.size, root=cp.root, signed_at=cp.signed_at
            )
            self._save()
        return cosign(cp, self.key)

    @staticmethod
    def _check_successor(seen: SeenHead, cp: Checkpoint, proof: list[str]) -> None:
        if cp.size < seen.size:
            raise WitnessRefused(
                f"the tree shrank: this witness has seen {seen.size} entries, the checkpoint "
                f"covers {cp.size}; entries were cut or an older snapshot restored"
            )
        if cp.size == seen.size:
            if cp.root != seen.root:
                raise WitnessRefused(
                    f"a fork: this witness cosigned another tree of {cp.size} entries (root "
                    f"{seen.root[:16]}…); the log shows two different histories"
                )
            return
        try:
            path = [bytes.fromhex(p) for p in proof]
            consistent = merkle.verify_consistency(
                seen.size, cp.size, path, bytes.fromhex(seen.root), bytes.fromhex(cp.root)
            )
        except ValueError:
            consistent = False
        if not consistent:
            raise WitnessRefused(
                f"the checkpoint of {cp.size} entries is not an append-only extension of the "
                f"{seen.size} this witness saw: the consistency proof does not verify"
            )
