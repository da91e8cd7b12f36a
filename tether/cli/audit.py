"""`tether audit …`: verify, checkpoint, prove and inspect the ledger.

The chain and its proofs are here; reading a workflow's events (`show`, `search`,
`what-if`) is in `audit_inspect`, replay and evidence bundles in `audit_evidence`.
A check that fails exits 1 naming what failed; bad input exits 2 with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from tether.cli.audit_evidence import audit_export, audit_replay, audit_verify_bundle
from tether.cli.audit_inspect import audit_search, audit_show, audit_what_if
from tether.cli.audit_keys import TrustFiles, TrustKeys, WitnessKeys, audit_key, pinned
from tether.cli.common import _settings, err, friendly, out, red
from tether.errors import TetherError
from tether.verification.audit import (
    AgainstReport,
    InclusionProof,
    check_consistency,
    prove_inclusion,
    tree_head,
    verify_against,
)
from tether.verification.checkpoint import (
    load_or_create_key,
    read_checkpoint,
    sign,
    verify_pinned,
)
from tether.verification.ledger import VerifyReport
from tether.verification.record import existing_ledger, verify_content

audit_app = typer.Typer(help="Verify, checkpoint and inspect the ledger.", no_args_is_help=True)


def _report(report: VerifyReport) -> None:
    if not report.ok:
        where = f" at entry {report.first_bad_seq}" if report.first_bad_seq else ""
        err.print(red("ledger broken", f"{where}: {report.problem}"))
        raise typer.Exit(1)
    out.print(f"ledger intact: {report.events} events, head {report.head_hash}")
    if isinstance(report, AgainstReport):
        witnessed = f", cosigned by {', '.join(report.cosigned_by)}" if report.cosigned_by else ""
        out.print(
            f"checkpoint of {report.events - report.tail_events} events signed by key "
            f"{report.signed_by}{witnessed}"
        )
        out.print(
            f"unprotected tail: {report.tail_events} events, the oldest recorded "
            f"{report.tail_seconds:.0f} s ago (no signature covers them yet)"
        )


@audit_app.command("verify")
@friendly
def audit_verify(
    against: Annotated[
        Path | None,
        typer.Option(help="A checkpoint file kept outside the database to verify against."),
    ] = None,
    trust_key: TrustKeys = None,
    trust_file: TrustFiles = None,
    witness_key: WitnessKeys = None,
) -> None:
    """Walk the hash chain, check every stored object the events name (and a checkpoint,
    signed by a pinned key); exit 1 naming the first bad entry."""
    settings = _settings()
    ledger = existing_ledger(settings.database_url)
    report: VerifyReport
    if against is None:
        report = ledger.verify()
    else:
        trust = pinned(settings, trust_key, trust_file, witness_key)
        report = verify_against(ledger, read_checkpoint(against), trust)
    checked, problems = verify_content(ledger)
    for problem in problems:
        err.print(red("content broken", f": {problem.line()}"))
    if problems and report.ok:
        _report(report)
        err.print(red("record broken", f": {len(problems)} of {checked} stored objects"))
        raise typer.Exit(1)
    _report(report)
    out.print(f"content intact: {checked} stored objects match their digests")


@audit_app.command("checkpoint")
@friendly
def audit_checkpoint(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
) -> None:
    """Sign the current Merkle tree head and write it to a file kept outside the database."""
    settings = _settings()
    ledger = existing_ledger(settings.database_url)
    checkpoint = sign(tree_head(ledger), load_or_create_key(settings.checkpoint_key))
    output.write_text(checkpoint.model_dump_json(indent=2))
    out.print(
        f"checkpoint of {checkpoint.size} events, root {checkpoint.root[:16]}…, "
        f"key {checkpoint.key_id} → {output}"
    )


@audit_app.command("prove")
@friendly
def audit_prove(
    seq: Annotated[int, typer.Argument(help="The event's sequence number.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Prove against this checkpoint's tree size.")
    ] = None,
) -> None:
    """Print an inclusion proof of one event (JSON), verified before it is printed."""
    ledger = existing_ledger(_settings().database_url)
    size = read_checkpoint(checkpoint).size if checkpoint else None
    total = len(ledger.hashes(size))
    if not 1 <= seq <= total:
        raise TetherError(f"event {seq} is not in a tree of {total} events; pick 1..{total}")
    proof = prove_inclusion(ledger, seq, size)
    if not proof.verify():
        raise TetherError(f"the inclusion proof of event {seq} does not verify")
    out.print_json(proof.model_dump_json())


@audit_app.command("verify-proof")
@friendly
def audit_verify_proof(
    proof: Annotated[Path, typer.Argument(help="An inclusion proof from 'tether audit prove'.")],
    checkpoint: Annotated[Path, typer.Option(help="The signed checkpoint it must lead to.")],
    trust_key: TrustKeys = None,
    trust_file: TrustFiles = None,
) -> None:
    """Verify an inclusion proof against a checkpoint signed by a pinned key, offline."""
    try:
        parsed = InclusionProof.model_validate_json(proof.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TetherError(f"cannot read proof {str(proof)!r}: {exc.strerror}") from None
    except ValidationError as exc:
        raise TetherError(
            f"{str(proof)!r} is not an inclusion proof: {exc.errors()[0]['msg']}"
        ) from None
    cp = read_checkpoint(checkpoint)
    problem = verify_pinned(cp, pinned(_settings(), trust_key, trust_file))
    if not problem and (parsed.tree_size, parsed.root) != (cp.size, cp.root):
        problem = (
            f"the proof is for a tree of {parsed.tree_size} events, the checkpoint covers "
            f"{cp.size}: prove against this checkpoint with --checkpoint"
        )
    if not problem and not parsed.verify():
        problem = f"the proof does not put event {parsed.seq} in the checkpoint's tree"
    if problem:
        err.print(red("proof rejected", f": {problem}"))
        raise typer.Exit(1)
    out.print(
        f"event {parsed.seq} ({parsed.event_hash[:16]}…) is in the checkpoint of {cp.size} "
        f"events signed by key {cp.key_id}"
    )


@audit_app.command("consistency")
@friendly
def audit_consistency(
    old: Annotated[Path, typer.Argument(help="The older checkpoint.")],
    new: Annotated[Path | None, typer.Argument(help="The newer one (default: now).")] = None,
    trust_key: TrustKeys = None,
    trust_file: TrustFiles = None,
) -> None:
    """Prove the ledger only grew since an older checkpoint, both signed by pinned keys,
    and that the ledger holds the newer one's tree; exit 1 if not."""
    settings = _settings()
    trust = pinned(settings, trust_key, trust_file)
    old_cp = read_checkpoint(old)
    new_cp = read_checkpoint(new) if new else None
    ledger = existing_ledger(settings.database_url)
    problem, proof = check_consistency(ledger, old_cp, new_cp, trust)
    if problem or proof is None:
        err.print(red("not consistent", f": {problem}"))
        raise typer.Exit(1)
    signers = old_cp.key_id if new_cp is None else f"{old_cp.key_id} and {new_cp.key_id}"
    out.print(
        f"consistent: {old_cp.size} → {proof.new_size} events, append-only; the ledger holds "
        f"the {'newer checkpoint' if new_cp else 'current'} tree (signed by key {signers})"
    )


audit_app.command("key")(audit_key)
audit_app.command("show")(audit_show)
audit_app.command("search")(audit_search)
audit_app.command("what-if")(audit_what_if)
audit_app.command("replay")(audit_replay)
audit_app.command("export")(audit_export)
audit_app.command("verify-bundle")(audit_verify_bundle)
