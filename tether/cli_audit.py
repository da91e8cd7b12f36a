"""`tether audit …`: verify, checkpoint, prove and inspect the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from governance.errors import TetherError
from tether.cli_common import _settings, _stores, err, friendly, out
from verification.audit import prove_consistency, prove_inclusion, tree_head, verify_against
from verification.checkpoint import load_or_create_key, read_checkpoint, sign
from verification.ledger import VerifyReport

audit_app = typer.Typer(help="Verify, checkpoint and inspect the ledger.", no_args_is_help=True)


def _report(report: VerifyReport) -> None:
    if report.ok:
        out.print(f"ledger intact: {report.events} events, head {report.head_hash}", soft_wrap=True)
        return
    where = f" at entry {report.first_bad_seq}" if report.first_bad_seq else ""
    err.print(f"[red]ledger broken[/]{where}: {report.problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@audit_app.command("verify")
@friendly
def audit_verify(
    against: Annotated[
        Path | None,
        typer.Option(help="A checkpoint file kept outside the database to verify against."),
    ] = None,
) -> None:
    """Walk the hash chain (and check a checkpoint); exit 1 naming the first bad entry."""
    ledger, _ = _stores(_settings())
    if against is None:
        _report(ledger.verify())
    else:
        _report(verify_against(ledger, read_checkpoint(against)))


@audit_app.command("checkpoint")
@friendly
def audit_checkpoint(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
) -> None:
    """Sign the current Merkle tree head and write it to a file kept outside the database."""
    settings = _settings()
    ledger, _ = _stores(settings)
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
    ledger, _ = _stores(_settings())
    size = read_checkpoint(checkpoint).size if checkpoint else None
    total = len(ledger.hashes(size))
    if not 1 <= seq <= total:
        raise TetherError(f"event {seq} is not in a tree of {total} events; pick 1..{total}")
    proof = prove_inclusion(ledger, seq, size)
    if not proof.verify():
        raise TetherError(f"the inclusion proof of event {seq} does not verify")
    out.print_json(proof.model_dump_json())


@audit_app.command("consistency")
@friendly
def audit_consistency(
    old: Annotated[Path, typer.Argument(help="The older checkpoint.")],
    new: Annotated[Path | None, typer.Argument(help="The newer one (default: now).")] = None,
) -> None:
    """Prove the ledger only grew since an older checkpoint; exit 1 if it did not."""
    ledger, _ = _stores(_settings())
    old_cp = read_checkpoint(old)
    new_size = read_checkpoint(new).size if new else None
    proof = prove_consistency(ledger, old_cp.size, new_size)
    if proof.old_root != old_cp.root or not proof.verify():
        err.print(
            f"[red]not consistent[/]: the ledger's first {old_cp.size} entries no longer "
            "match the older checkpoint",
            highlight=False,
        )
        raise typer.Exit(1)
    out.print(f"consistent: {old_cp.size} → {proof.new_size} events, append-only")


@audit_app.command("show")
@friendly
def audit_show(
    workflow_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a workflow's recorded events in order."""
    ledger, _ = _stores(_settings())
    events = ledger.events(workflow_id)
    if not events:
        raise TetherError(f"the ledger has no events for workflow {workflow_id!r}; check the id")
    if as_json:
        out.print_json(data=[e.model_dump(mode="json") for e in events])
        return
    from tether.demo import print_events

    print_events(out, events)
