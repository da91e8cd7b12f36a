"""Scheduled checkpoints: sign the ledger's tree head when it is due, have witnesses
cosign it, and keep it outside the database (a `CheckpointSink`).

`sign_checkpoint` is the activity the `tether.checkpoint` workflow runs on every tick of
its Temporal Schedule. It signs when the ledger grew and either `checkpoint_every_seconds`
passed since the latest stored checkpoint or `checkpoint_every_events` events are not yet
covered; otherwise it does nothing. Idempotent: a retry finds the checkpoint it stored.

Each witness (`checkpoint_witnesses`, `tether witness`) is asked for the head it last
cosigned of this log, sent the consistency proof from there, and asked to cosign. A
witness that refuses (a fork, a shrunk tree) or cannot be reached is named in the result
and the log; the checkpoint is stored with the cosignatures it got, so the tail is still
covered by the log's own signature.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field
from temporalio import activity

from tether.core.config import Settings
from tether.verification.audit import prove_consistency, tree_head
from tether.verification.checkpoint import Checkpoint, Cosignature, load_or_create_key, sign
from tether.verification.ledger import Ledger
from tether.verification.sink import CheckpointSink, DirectorySink

log = logging.getLogger("tether.checkpoint")


class CheckpointInput(BaseModel):
    every_seconds: float = 0.0
    every_events: int = 0


class CheckpointResult(BaseModel):
    signed: bool
    size: int
    where: str = ""
    cosigned_by: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)
    """One line per witness that refused or could not be reached."""


def _age(cp: Checkpoint) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(cp.signed_at)).total_seconds()


class CheckpointActivities:
    def __init__(
        self,
        ledger: Ledger,
        key: Ed25519PrivateKey,
        sink: CheckpointSink,
        witnesses: list[str],
    ) -> None:
        self.ledger = ledger
        self.key = key
        self.sink = sink
        self.witnesses = witnesses

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger) -> CheckpointActivities:
        return cls(
            ledger,
            load_or_create_key(settings.checkpoint_key),
            DirectorySink(settings.console_checkpoint_dir),
            list(settings.checkpoint_witnesses),
        )

    @activity.defn(name="tether.sign_checkpoint")
    def sign_checkpoint(self, inp: CheckpointInput) -> CheckpointResult:
        latest = self.sink.latest()
        head = tree_head(self.ledger)
        if latest is not None and head.size <= latest.size:
            return CheckpointResult(signed=False, size=latest.size)
        tail = head.size - (latest.size if latest else 0)
        due = (
            latest is None
            or (inp.every_events > 0 and tail >= inp.every_events)
            or _age(latest) >= inp.every_seconds
        )
        if not due:
            return CheckpointResult(signed=False, size=latest.size if latest else 0)
        cp = sign(head, self.key)
        cosignatures, refused = self._witness(cp)
        cp = cp.model_copy(update={"cosignatures": cosignatures})
        where = self.sink.put(cp)
        log.info(
            "checkpoint of %d events → %s (%d cosignature(s))", cp.size, where, len(cp.cosignatures)
        )
        return CheckpointResult(
            signed=True,
            size=cp.size,
            where=where,
            cosigned_by=[c.witness_key_id for c in cosignatures],
            refused=refused,
        )

    def _witness(self, cp: Checkpoint) -> tuple[list[Cosignature], list[str]]:
        if not self.witnesses:
            return [], []
        with httpx.Client(timeout=10.0) as http:
            return self._ask(http, cp)

    def _ask(self, http: httpx.Client, cp: Checkpoint) -> tuple[list[Cosignature], list[str]]:
        cosignatures: list[Cosignature] = []
        refused: list[str] = []
        for url in self.witnesses:
            base = url.rstrip("/")
            try:
                seen = http.get(f"{base}/v1/head/{cp.key_id}").raise_for_status().json()
                old = int(seen.get("size", 0))
                proof: list[str] = []
                if 0 < old < cp.size:
                    proof = prove_consistency(self.ledger, old, cp.size).path
                answer = http.post(
                    f"{base}/v1/cosign",
                    json={"checkpoint": cp.model_dump(mode="json"), "proof": proof},
                )
            except (httpx.HTTPError, ValueError) as exc:
                refused.append(f"witness {url!r} could not be asked: {exc}")
                continue
            if answer.status_code == 409:
                why = answer.json().get("refused", answer.text)
                refused.append(f"witness {url!r} refused: {why}")
                log.error("witness %r refused the checkpoint of %d: %s", url, cp.size, why)
                continue
            if answer.status_code != 200:
                refused.append(f"witness {url!r} answered {answer.status_code}")
                continue
            cosignatures.append(Cosignature.model_validate(answer.json()))
        return cosignatures, refused
