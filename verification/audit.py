"""Audits over the ledger: tree heads, checkpoints, inclusion and consistency proofs.

`verify_against` extends the chain walk with a checkpoint kept outside the database, which
catches what a chain alone cannot: a truncated tail, a forged entry with the rest of the
chain recomputed, and a restored older snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.verification import merkle
from tether.verification.checkpoint import (
    Checkpoint,
    TreeHead,
    verify_cosignatures,
    verify_pinned,
)
from tether.verification.ledger import EventRow, Ledger, VerifyReport
from tether.verification.trust import Trust


def _leaves(hashes: list[str]) -> list[bytes]:
    return [merkle.leaf_hash(bytes.fromhex(h)) for h in hashes]


def tree_head(ledger: Ledger, size: int | None = None) -> TreeHead:
    hashes = ledger.hashes(size)
    if size is not None and len(hashes) < size:
        raise ValueError(f"the ledger has {len(hashes)} entries, fewer than {size}")
    return TreeHead(
        size=len(hashes),
        root=merkle.root(_leaves(hashes)).hex(),
        head_hash=hashes[-1] if hashes else "",
    )


class AgainstReport(VerifyReport):
    """The chain walk plus what the checkpoint proves, and what it leaves unprotected."""

    signed_by: str = ""
    cosigned_by: list[str] = Field(default_factory=list)
    tail_events: int = 0
    """Events after the checkpoint: no signature covers them yet."""
    tail_seconds: float = 0.0
    """How long ago the oldest of them was recorded (0 when there are none)."""


def _tail(ledger: Ledger, checkpoint: Checkpoint, events: int) -> tuple[int, float]:
    count = max(events - checkpoint.size, 0)
    if not count:
        return 0, 0.0
    with Session(ledger.engine) as session:
        first = session.scalar(
            select(EventRow.recorded_at).where(EventRow.seq == checkpoint.size + 1)
        )
    if not first:
        return count, 0.0
    age = datetime.now(UTC) - datetime.fromisoformat(first)
    return count, max(age.total_seconds(), 0.0)


def verify_against(ledger: Ledger, checkpoint: Checkpoint, trust: Trust) -> AgainstReport:
    """Walk the chain, check the checkpoint's signer (and witnesses) against the pinned
    keys, then prove the ledger still holds the checkpoint's tree as a prefix."""
    trust.require()
    report = AgainstReport(**ledger.verify().model_dump())
    problem = verify_pinned(checkpoint, trust)
    if problem:
        return report.model_copy(update={"ok": False, "problem": problem})
    witnesses, problems = verify_cosignatures(checkpoint, trust)
    report = report.model_copy(update={"signed_by": checkpoint.key_id, "cosigned_by": witnesses})
    if problems:
        return report.model_copy(update={"ok": False, "problem": problems[0]})
    if not report.ok:
        return report
    hashes = ledger.hashes(checkpoint.size)
    if len(hashes) < checkpoint.size:
        return report.model_copy(
            update={
                "ok": False,
                "first_bad_seq": len(hashes) + 1,
                "problem": (
                    f"the ledger has {len(hashes)} entries but the checkpoint signed at "
                    f"{checkpoint.signed_at} covers {checkpoint.size}: entries were cut from "
                    "the end or an older snapshot was restored"
                ),
            }
        )
    if merkle.root(_leaves(hashes)).hex() != checkpoint.root:
        return report.model_copy(
            update={
                "ok": False,
                "problem": (
                    f"the first {checkpoint.size} entries do not match the checkpoint signed at "
                    f"{checkpoint.signed_at}: entries were forged, altered or reordered and the "
                    "chain recomputed"
                ),
            }
        )
    events, seconds = _tail(ledger, checkpoint, report.events)
    return report.model_copy(update={"tail_events": events, "tail_seconds": seconds})


def check_consistency(
    ledger: Ledger, old: Checkpoint, new: Checkpoint | None, trust: Trust
) -> tuple[str, ConsistencyProof | None]:
    """("", proof) when both checkpoints are signed by pinned keys, the ledger holds the
    newer one's tree (or, without one, its current tree), and that tree only appended to
    the older one's; otherwise (what is wrong, None)."""
    trust.require()
    for which, cp in (("older", old), ("newer", new)):
        if cp is not None:
            problem = verify_pinned(cp, trust)
            if problem:
                return f"the {which} checkpoint: {problem}", None
    if new is not None and old.size > new.size:
        return f"the older checkpoint ({old.size}) is larger than the newer ({new.size})", None
    new_size = new.size if new is not None else None
    have = len(ledger.hashes(new_size))
    if new is not None and have < new.size:
        return (
            f"the ledger has {have} entries, fewer than the newer checkpoint's {new.size}: "
            "entries were cut or an older snapshot restored"
        ), None
    if have < old.size:
        return f"the ledger has {have} entries, fewer than the older checkpoint's {old.size}", None
    proof = prove_consistency(ledger, old.size, new_size)
    if new is not None and proof.new_root != new.root:
        return (
            f"the ledger's first {new.size} entries no longer match the newer checkpoint: "
            "entries were forged, altered or reordered"
        ), None
    if proof.old_root != old.root:
        return (f"the ledger's first {old.size} entries no longer match the older checkpoint"), None
    if new is not None:
        proof = proof.model_copy(update={"old_root": old.root, "new_root": new.root})
    if not proof.verify():
        return "the consistency proof does not verify", None
    return "", proof


class InclusionProof(BaseModel):
    seq: int
    event_hash: str
    tree_size: int
    root: str
    path: list[str]

    def verify(self) -> bool:
        try:
            return merkle.verify_inclusion(
                merkle.leaf_hash(bytes.fromhex(self.event_hash)),
                self.seq - 1,
                self.tree_size,
                [bytes.fromhex(p) for p in self.path],
                bytes.fromhex(self.root),
            )
        except ValueError:  # not hex: a changed proof
            return False


class ConsistencyProof(BaseModel):
    old_size: int
    old_root: str
    new_size: int
    new_root: str
    path: list[str]

    def verify(self) -> bool:
        try:
            return merkle.verify_consistency(
                self.old_size,
                self.new_size,
                [bytes.fromhex(p) for p in self.path],
                bytes.fromhex(self.old_root),
                bytes.fromhex(self.new_root),
            )
        except ValueError:  # not hex: a changed proof
            return False


def prove_inclusion(ledger: Ledger, seq: int, tree_size: int | None = None) -> InclusionProof:
    hashes = ledger.hashes(tree_size)
    leaves = _leaves(hashes)
    return InclusionProof(
        seq=seq,
        event_hash=hashes[seq - 1],
        tree_size=len(hashes),
        root=merkle.root(leaves).hex(),
        path=[p.hex() for p in merkle.inclusion_proof(leaves, seq - 1)],
    )


def prove_consistency(
    ledger: Ledger, old_size: int, new_size: int | None = None
) -> ConsistencyProof:
    leaves = _leaves(ledger.hashes(new_size))
    return ConsistencyProof(
        old_size=old_size,
        old_root=merkle.root(leaves[:old_size]).hex(),
        new_size=len(leaves),
        new_root=merkle.root(leaves).hex(),
        path=[p.hex() for p in merkle.consistency_proof(leaves, old_size)],
    )
