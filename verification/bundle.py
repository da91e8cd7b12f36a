"""Evidence bundles: one self-contained, signed file per workflow that verifies offline.

A bundle holds the workflow's ledger events and the `policy.loaded` events of the policy
versions they cite, an inclusion proof of each against a signed checkpoint, the Temporal
history, and the policy texts. The manifest (everything but the history and content
bodies, which it names by digest) is signed with the checkpoint key, so changing any byte
anywhere fails verification, and the failure names the part.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, JsonValue, ValidationError

from tether.errors import LedgerError
from tether.verification.audit import InclusionProof, prove_inclusion, tree_head
from tether.verification.checkpoint import Checkpoint, sign, verify_pinned
from tether.verification.events import RecordedEvent, canonical_json, digest
from tether.verification.ledger import Ledger, event_hash
from tether.verification.trust import Trust


class Manifest(BaseModel):
    format: Literal["tether-evidence/v1"] = "tether-evidence/v1"
    workflow_id: str
    exported_at: str
    checkpoint: Checkpoint
    events: list[RecordedEvent]
    proofs: list[InclusionProof]
    history_digest: str
    content_digests: list[str]


class Bundle(BaseModel):
    manifest: Manifest
    signature: str
    history: str
    """The workflow's Temporal history as JSON (temporalio's WorkflowHistory.to_json)."""
    content: dict[str, JsonValue]
    """Policy texts (and other content) keyed by digest."""


def _manifest_bytes(manifest: Manifest) -> bytes:
    return canonical_json(manifest.model_dump(mode="json")).encode()


def build_bundle(
    ledger: Ledger, workflow_id: str, history_json: str, key: Ed25519PrivateKey
) -> Bundle:
    events = ledger.events(workflow_id)
    if not events:
        raise ValueError(f"the ledger has no events for workflow {workflow_id!r}")
    versions = {e.policy_version for e in events if e.policy_version}
    policy_events = [
        e for e in ledger.events_of_kind("policy.loaded") if e.policy_version in versions
    ]
    content: dict[str, JsonValue] = {}
    for e in policy_events:
        for field in ("model_digest", "policy_digest"):
            ref = str(e.payload[field])
            try:
                content[ref] = ledger.blob(ref)
            except (KeyError, ValueError):
                raise LedgerError(
                    f"the policy text {ref[:23]}… of policy version {e.policy_version!r} "
                    f"(ledger entry {e.seq}) is missing or altered in the content store; "
                    "no bundle is exported. Run 'tether audit verify' to see what changed"
                ) from None
    chosen = sorted([*policy_events, *events], key=lambda e: e.seq)
    checkpoint = sign(tree_head(ledger), key)
    proofs = [prove_inclusion(ledger, e.seq, checkpoint.size) for e in chosen]
    manifest = Manifest(
        workflow_id=workflow_id,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        checkpoint=checkpoint,
        events=chosen,
        proofs=proofs,
        history_digest=digest(history_json),
        content_digests=sorted(content),
    )
    return Bundle(
        manifest=manifest,
        signature=key.sign(_manifest_bytes(manifest)).hex(),
        history=history_json,
        content=content,
    )


def verify_bundle(raw: bytes, trust: Trust) -> list[str]:
    """Every problem found, each naming the part; an empty list means the bundle holds.
    The signer must be a key `trust` pins (CheckpointError when it pins none)."""
    trust.require()
    try:
        bundle = Bundle.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return [f"not a Tether evidence bundle: {first['msg']} at {where or 'top level'}"]
    m = bundle.manifest
    problems: list[str] = []
    if bundle.model_dump_json().encode() != raw:
        # Bytes that parse to the same values (a renamed key falling back to its default,
        # added whitespace) are still a change to a sealed file.
        problems.append("the bundle's bytes are not as exported: it was edited")
    try:
        bytes.fromhex(bundle.signature)
    except ValueError:
        return ["the manifest's signature is not hex: it was changed"]
    if bytes.fromhex(bundle.signature).hex() != bundle.signature:
        problems.append("the manifest's signature is not in canonical lowercase hex")
    problem = verify_pinned(m.checkpoint, trust)
    if problem:
        problems.append(problem)
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(m.checkpoint.public_key)).verify(
            bytes.fromhex(bundle.signature), _manifest_bytes(m)
        )
    except (ValueError, InvalidSignature):
        problems.append("the manifest's signature does not verify: the manifest was changed")
    proofs = {p.seq: p for p in m.proofs}
    for e in m.events:
        fields: dict[str, JsonValue] = e.model_dump(mode="json")
        fields["payload"] = canonical_json(e.payload)
        if event_hash(fields) != e.hash:
            problems.append(f"event {e.seq} ({e.kind}) does not match its hash: it was changed")
        proof = proofs.get(e.seq)
        if proof is None:
            problems.append(f"event {e.seq} has no inclusion proof")
        elif (
            proof.event_hash != e.hash
            or proof.root != m.checkpoint.root
            or proof.tree_size != m.checkpoint.size
            or not proof.verify()
        ):
            problems.append(
                f"event {e.seq}'s inclusion proof does not verify against the checkpoint"
            )
    if digest(bundle.history) != m.history_digest:
        problems.append("the Temporal history does not match the manifest's digest: it was changed")
    if sorted(bundle.content) != m.content_digests:
        problems.append("the bundle's content does not match the manifest's list")
    for ref, value in bundle.content.items():
        if digest(value) != ref:
            problems.append(f"content {ref[:23]}… does not match its digest: it was changed")
    return problems


def load_history_json(bundle_raw: bytes) -> tuple[str, str]:
    """(workflow id, history JSON) of a bundle, for replaying it offline."""
    data = json.loads(bundle_raw)
    return str(data["manifest"]["workflow_id"]), str(data["history"])
