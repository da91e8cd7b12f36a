"""Signed checkpoints: an Ed25519 signature over the ledger's Merkle tree head.

A checkpoint kept outside the database lets an auditor prove later that the ledger only
grew: every event it covered is still there, unchanged and in order (the root matches),
and nothing was cut from the end or rolled back to an older snapshot (the size).

Signing keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public); `key_id` is the
first 16 hex digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

from tether.errors import CheckpointError
from tether.verification.trust import Trust


class TreeHead(BaseModel):
    size: int
    root: str
    """Hex Merkle root over the first `size` event hashes."""
    head_hash: str
    """Hex chain hash of event `size` (the last one covered)."""


class Cosignature(BaseModel):
    """A witness's signature over a checkpoint it checked was a consistent successor."""

    witness_key_id: str
    public_key: str
    cosigned_at: str
    signature: str


class Checkpoint(TreeHead):
    signed_at: str
    key_id: str
    public_key: str
    """Hex raw Ed25519 public key, for convenience; trust it only if `key_id` is pinned."""
    signature: str
    cosignatures: list[Cosignature] = Field(default_factory=list)
    """Witnesses' cosignatures; outside the signed message, so a witness can add one."""

    def message(self) -> bytes:
        fields = ("tether-checkpoint/v1", self.size, self.root, self.head_hash, self.signed_at)
        return "\n".join(str(f) for f in fields).encode()

    def cosign_message(self, cosigned_at: str) -> bytes:
        return b"tether-cosign/v1\n" + self.message() + b"\n" + cosigned_at.encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at `path`, created (mode 0600) when absent."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(
                f"signing key {str(path)!r} is not a PEM private key: {exc}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError(f"signing key {str(path)!r} is not an Ed25519 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def sign(head: TreeHead, key: Ed25519PrivateKey) -> Checkpoint:
    public = key.public_key()
    unsigned = Checkpoint(
        **head.model_dump(),
        signed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        key_id=key_id(public),
        public_key=_raw_public(public).hex(),
        signature="",
    )
    return unsigned.model_copy(update={"signature": key.sign(unsigned.message()).hex()})


def verify_signature(checkpoint: Checkpoint, trusted_key_ids: set[str] | None = None) -> str:
    """Return "" when the signature holds (and the key is trusted), else the problem."""
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key))
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (ValueError, InvalidSignature):
        return "the checkpoint's signature does not verify: it was altered or forged"
    if key_id(public) != checkpoint.key_id:
        return "the checkpoint's key id does not match its public key"
    if trusted_key_ids is not None and checkpoint.key_id not in trusted_key_ids:
        return f"the checkpoint was signed by key {checkpoint.key_id!r}, which is not trusted"
    return ""


def _holds(public_hex: str, signature: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature), message
        )
    except (ValueError, InvalidSignature):
        return False
    return True


def verify_pinned(checkpoint: Checkpoint, trust: Trust) -> str:
    """ "" when the signature holds and a pinned log key made it while it was valid."""
    problem = verify_signature(checkpoint)
    if problem:
        return problem
    problem = trust.check(checkpoint.key_id, checkpoint.public_key, checkpoint.signed_at)
    return f"the checkpoint was {problem}" if problem else ""


def cosign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> Cosignature:
    public = key.public_key()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return Cosignature(
        witness_key_id=key_id(public),
        public_key=_raw_public(public).hex(),
        cosigned_at=at,
        signature=key.sign(checkpoint.cosign_message(at)).hex(),
    )


def verify_cosignatures(checkpoint: Checkpoint, trust: Trust) -> tuple[list[str], list[str]]:
    """(pinned witnesses whose cosignature holds, problems). A cosignature that does not
    verify is a problem; one from a witness nobody pinned is ignored (it proves nothing)."""
    good: list[str] = []
    problems: list[str] = []
    pinned = {k.key_id for k in trust.of("witness")}
    for c in checkpoint.cosignatures:
        if c.witness_key_id not in pinned:
            continue
        if not _holds(c.public_key, c.signature, checkpoint.cosign_message(c.cosigned_at)):
            problems.append(
                f"the cosignature of witness {c.witness_key_id!r} does not verify: the "
                "checkpoint or the cosignature was altered"
            )
            continue
        problem = trust.check(c.witness_key_id, c.public_key, c.cosigned_at, "witness")
        if problem:
            problems.append(f"the cosignature was {problem}")
        else:
            good.append(c.witness_key_id)
    if pinned and not good and not problems:
        problems.append(
            "no pinned witness cosigned the checkpoint: use a witnessed checkpoint, or pin "
            "no witness key"
        )
    return good, problems


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc.strerror}") from None
    except ValidationError as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a Tether checkpoint: {exc.errors()[0]['msg']}"
        ) from None
