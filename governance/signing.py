"""Signed approvals: the approving service signs each decision; workers verify it.

An approval is only as good as the identity behind it. A Temporal update or signal says
whatever its sender typed, so the approving service (CLI, console) signs every decision
with an Ed25519 key it holds, and the workflow accepts a decision only when it verifies
against a public key the workers trust. The signature covers the whole grant — request,
workflow, run, step, digest of the action's arguments, policy version, approver, verdict,
comment, time and a nonce, and for an approval with edits the edits and the digest
of the edited arguments — so a grant cannot be replayed on another step, another
argument set or another policy, and each grant is consumed once (by its nonce).

Pure and deterministic (no I/O, no clock): workflow code calls `verify_decision`.
Key files are PEM (see `verification.checkpoint.load_or_create_key`); public keys travel
as hex of the raw 32 bytes.
"""

from __future__ import annotations

import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tether.governance.approvals import ApprovalDecision

_SIGNED_FIELDS = (
    "request_id",
    "workflow_id",
    "run_id",
    "step",
    "args_digest",
    "policy_version",
    "approver",
    "approve",
    "comment",
    "issued_at",
    "nonce",
)


def public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def key_id_of(public: str) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16]


def message(decision: ApprovalDecision) -> bytes:
    """The bytes a signature covers: every binding field, in a fixed canonical form."""
    fields = decision.model_dump(mode="json", include=set(_SIGNED_FIELDS))
    if decision.edits or decision.edited_digest:
        # Only an edited decision signs its edits: older signatures stay valid (replay).
        fields["edits"] = decision.model_dump(mode="json")["edits"]
        fields["edited_digest"] = decision.edited_digest
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b"tether-approval/v1\n" + body.encode()


def sign_decision(decision: ApprovalDecision, key: Ed25519PrivateKey) -> ApprovalDecision:
    """The decision with `key_id` and `signature` set."""
    unsigned = decision.model_copy(update={"key_id": key_id_of(public_hex(key)), "signature": ""})
    return unsigned.model_copy(update={"signature": key.sign(message(unsigned)).hex()})


def verify_decision(decision: ApprovalDecision, trusted: list[str]) -> str:
    """ "" when a trusted key signed exactly this decision; otherwise what is wrong."""
    if not decision.signature:
        return (
            f"the decision by {decision.approver!r} is not signed; decide through the approving "
            "service ('tether approvals approve|reject' or the console), not a raw signal"
        )
    by_id = {key_id_of(k): k for k in trusted}
    public = by_id.get(decision.key_id)
    if public is None:
        return (
            f"the decision by {decision.approver!r} is signed by key {decision.key_id!r}, "
            "which the workers do not trust"
        )
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(decision.signature), message(decision)
        )
    except (ValueError, InvalidSignature):
        return (
            f"the signature on the decision by {decision.approver!r} does not verify: "
            "the decision was altered or forged"
        )
    return ""


def signer_of(decision: ApprovalDecision, trusted: list[str]) -> str:
    """The id of the trusted key whose signature on exactly this decision holds, or ""
    (unsigned, signed by an untrusted key, or altered): who vouches for the decision,
    as opposed to the `approver` it claims."""
    return decision.key_id if decision.signature and not verify_decision(decision, trusted) else ""
