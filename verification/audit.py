"""Audits over the ledger: tree heads, checkpoints, inclusion and consistency proofs.

`verify_against` extends the chain walk with a checkpoint kept outside the database, which
catches what a chain alone cannot: a truncated tail, a forged entry with the rest of the
chain recomputed, and a restored older snapshot.
"""

from __future__ import annotations

from pydantic import BaseModel

from tether.verification import merkle
from tether.verification.checkpoint import Checkpoint, TreeHead, verify_signature
from tether.verification.ledger import Ledger, VerifyReport


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


def verify_against(
    ledger: Ledger, checkpoint: Checkpoint, trusted_key_ids: set[str] | None = None
) -> VerifyReport:
    """Walk the chain, then prove the ledger still holds the checkpoint's tree as a prefix."""
    problem = verify_signature(checkpoint, trusted_key_ids)
    report = ledger.verify()
    if problem:
        return report.model_copy(update={"ok": False, "problem": problem})
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
    return report


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
