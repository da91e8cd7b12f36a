"""The run page's checks of the ledger: the chain, and the newest checkpoint a pinned key
signed (`audit_trusted_keys`, `audit_trust_file`, `audit_witness_keys`), through the same
`verify_against` that `tether audit verify --against` calls. With nothing pinned, a
checkpoint never "holds"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tether.console.app import ConsoleState
from tether.errors import CheckpointError
from tether.verification.audit import verify_against
from tether.verification.checkpoint import Checkpoint, verify_pinned
from tether.verification.ledger import VerifyReport
from tether.verification.trust import Trust


def pinned_trust(console: ConsoleState) -> Trust:
    """The keys the console's checks accept: `audit_trusted_keys`, `audit_trust_file`,
    `audit_witness_keys` (CheckpointError for a bad pin or trust file)."""
    st = console.settings
    files = [st.audit_trust_file] if st.audit_trust_file is not None else []
    return Trust.gather(st.audit_trusted_keys, files, st.audit_witness_keys)


def latest_checkpoint(folder: Path, trust: Trust | None = None) -> tuple[Checkpoint | None, str]:
    """The largest checkpoint in `folder` a pinned key signed (else the largest at all, so
    its failure shows), and the name of its file."""
    best: tuple[Checkpoint | None, str] = (None, "")
    best_pinned: tuple[Checkpoint | None, str] = (None, "")
    if not folder.is_dir():
        return best
    for path in sorted(folder.glob("*.json")):
        try:
            cp = Checkpoint.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError):
            continue
        if best[0] is None or cp.size >= best[0].size:
            best = (cp, path.name)
        good = trust is not None and not verify_pinned(cp, trust)
        if good and (best_pinned[0] is None or cp.size >= best_pinned[0].size):
            best_pinned = (cp, path.name)
    return best_pinned if best_pinned[0] is not None else best


def _verification(console: ConsoleState) -> dict[str, Any]:
    report = console.ledger.verify()
    try:
        trust: Trust | None = pinned_trust(console)
    except CheckpointError:
        trust = None
    cp, name = latest_checkpoint(console.settings.console_checkpoint_dir, trust)
    against: VerifyReport | None = None
    if cp is not None and trust is not None and trust.of("log"):
        against = verify_against(console.ledger, cp, trust)
    elif cp is not None:
        against = report.model_copy(
            update={
                "ok": False,
                "problem": "no pinned key to check its signature against (or the trust file "
                "is unreadable): set audit_trusted_keys or audit_trust_file to the signer's key",
            }
        )
    return {"chain": report, "checkpoint": cp, "checkpoint_file": name, "against": against}
