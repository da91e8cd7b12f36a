"""`tether audit …`: verify, checkpoint, prove and inspect the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.text import Text
from temporalio.service import RPCError

from tether.cli.common import (
    _app,
    _run,
    _settings,
    _stores,
    emit_table,
    err,
    event_line,
    friendly,
    out,
    red,
)
from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.runtime.replay import ReplayReport
from tether.verification.audit import (
    InclusionProof,
    prove_consistency,
    prove_inclusion,
    tree_head,
    verify_against,
)
from tether.verification.bundle import Bundle, verify_bundle
from tether.verification.checkpoint import (
    load_or_create_key,
    read_checkpoint,
    sign,
    verify_signature,
)
from tether.verification.forensics import timeline, what_if
from tether.verification.ledger import VerifyReport
from tether.verification.query import EventQuery, OfflineLedger

audit_app = typer.Typer(help="Verify, checkpoint and inspect the ledger.", no_args_is_help=True)


def _report(report: VerifyReport) -> None:
    if report.ok:
        out.print(
            f"ledger intact: {report.events} events, head {report.head_hash}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    where = f" at entry {report.first_bad_seq}" if report.first_bad_seq else ""
    err.print(red("ledger broken", f"{where}: {report.problem}"), highlight=False, soft_wrap=True)
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
        f"key {checkpoint.key_id} → {output}",
        markup=False,
        highlight=False,
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


@audit_app.command("verify-proof")
@friendly
def audit_verify_proof(
    proof: Annotated[Path, typer.Argument(help="An inclusion proof from 'tether audit prove'.")],
    checkpoint: Annotated[Path, typer.Option(help="The signed checkpoint it must lead to.")],
) -> None:
    """Verify an inclusion proof against a signed checkpoint, offline; exit 1 if it fails."""
    try:
        parsed = InclusionProof.model_validate_json(proof.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TetherError(f"cannot read proof {str(proof)!r}: {exc.strerror}") from None
    except ValidationError as exc:
        raise TetherError(
            f"{str(proof)!r} is not an inclusion proof: {exc.errors()[0]['msg']}"
        ) from None
    cp = read_checkpoint(checkpoint)
    problem = verify_signature(cp)
    if not problem and (parsed.tree_size, parsed.root) != (cp.size, cp.root):
        problem = (
            f"the proof is for a tree of {parsed.tree_size} events, the checkpoint covers "
            f"{cp.size}: prove against this checkpoint with --checkpoint"
        )
    if not problem and not parsed.verify():
        problem = f"the proof does not put event {parsed.seq} in the checkpoint's tree"
    if problem:
        err.print(red("proof rejected", f": {problem}"), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(
        f"event {parsed.seq} ({parsed.event_hash[:16]}…) is in the checkpoint of {cp.size} "
        f"events signed by {cp.key_id}",
        markup=False,
        highlight=False,
    )


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
            red(
                "not consistent",
                f": the ledger's first {old_cp.size} entries no longer match the older checkpoint",
            ),
            highlight=False,
        )
        raise typer.Exit(1)
    out.print(f"consistent: {old_cp.size} → {proof.new_size} events, append-only", markup=False)


@audit_app.command("show")
@friendly
def audit_show(
    workflow_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a workflow's timeline: steps, decisions, waits, approvers, outcomes, durations."""
    ledger, _ = _stores(_settings())
    events = ledger.events(workflow_id)
    if not events:
        raise TetherError(f"the ledger has no events for workflow {workflow_id!r}; check the id")
    entries = timeline(events)
    if as_json:
        out.print_json(
            data=[
                {
                    **e.model_dump(mode="json"),
                    **t.model_dump(include={"since_start_ms", "duration_ms"}),
                }
                for e, t in zip(events, entries, strict=True)
            ]
        )
        return
    emit_table(
        f"{workflow_id}: {len(events)} events",
        ("+ms", "took ms", "step", "event", "what", "seq"),
        [
            (
                f"{t.since_start_ms:.0f}",
                f"{t.duration_ms:.0f}" if t.duration_ms is not None else "",
                str(e.step or ""),
                e.kind,
                t.summary,
                str(e.seq),
            )
            for e, t in zip(events, entries, strict=True)
        ],
        ids=("event", "seq"),
    )


@audit_app.command("search")
@friendly
def audit_search(
    agent: Annotated[str | None, typer.Option(help="e.g. agent:ap-clerk")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. payments.pay")] = None,
    tier: Annotated[str | None, typer.Option(help="auto, notify, approve or deny")] = None,
    outcome: Annotated[str | None, typer.Option(help="e.g. denied, succeeded")] = None,
    kind: Annotated[str | None, typer.Option(help="e.g. decision, tool.executed")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest last.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find events by agent, action, tier, outcome, kind and time range."""
    ledger, _ = _stores(_settings())
    try:
        found = ledger.search(
            EventQuery(
                agent=agent,
                action=action,
                tier=tier,
                outcome=outcome,
                kind=kind,
                since=since,
                until=until,
                limit=limit,
            )
        )
    except ValueError as exc:
        raise TetherError(str(exc)) from None
    if as_json:
        out.print_json(data=[e.model_dump(mode="json") for e in found])
        return

    for e in found:
        out.print(
            f"{e.recorded_at[:19]} {e.workflow_id} " + event_line(e),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"{len(found)} event(s)", markup=False)


@audit_app.command("what-if")
@friendly
def audit_what_if(
    workflow_id: str,
    policy: Annotated[Path, typer.Option(help="The policy CSV to re-decide under.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-evaluate every recorded decision of a workflow under another policy."""
    settings = _settings()
    ledger, _ = _stores(settings)
    events = ledger.events(workflow_id)
    if not events:
        raise TetherError(f"the ledger has no events for workflow {workflow_id!r}; check the id")
    engine = PolicyEngine.from_files(settings.policy_model, policy)
    rows = what_if(events, engine)
    if as_json:
        out.print_json(data=[{**r.model_dump(), "changed": r.changed} for r in rows])
        return
    emit_table(
        f"{workflow_id} under {policy.name} ({engine.version})",
        ("step", "action", "resource", "recorded", "would be", "changed"),
        [
            (
                str(r.step),
                r.action,
                r.resource,
                f"{r.recorded_tier} ({r.recorded_rule})",
                f"{r.new_tier} ({r.new_rule})",
                Text("changed", style="yellow") if r.changed else "",
            )
            for r in rows
        ],
        ids=("action", "resource"),
    )
    err.print(
        f"{sum(r.changed for r in rows)} of {len(rows)} decision(s) would change",
        markup=False,
        highlight=False,
    )


@audit_app.command("replay")
@friendly
def audit_replay(workflow_id: str) -> None:
    """Replay a workflow's Temporal history against today's code and cross-check the ledger."""
    from tether.runtime.client import connect
    from tether.runtime.replay import replay_workflow

    settings = _settings()
    ledger, _ = _stores(settings)

    async def go() -> ReplayReport:
        client = await connect(settings)
        return await replay_workflow(client, ledger, workflow_id, app=_app(settings))

    try:
        report: ReplayReport = _run(go())
    except RPCError as exc:
        raise TetherError(f"cannot fetch the history of {workflow_id!r}: {exc.message}") from None
    _print_replay(report)


def _print_replay(report: ReplayReport) -> None:
    if report.replayed:
        out.print(
            f"replay: today's code reproduces {report.workflow_id} (run {report.run_id})",
            markup=False,
            highlight=False,
        )
    else:
        err.print(red("replay failed", f": {report.replay_error}"), highlight=False, soft_wrap=True)
    for d in report.divergences:
        err.print(
            red("divergence", f" (history event {d.event_id}, ledger entry {d.seq}): {d.problem}"),
            highlight=False,
            soft_wrap=True,
        )
    if not report.divergences:
        out.print(
            f"cross-check: {report.facts_checked} activity results match the ledger", markup=False
        )
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
@friendly
def audit_export(
    workflow_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle file to write.")],
) -> None:
    """Write one self-contained, signed evidence bundle for a workflow."""
    from tether.runtime.client import connect
    from tether.runtime.evidence import export_bundle

    settings = _settings()
    ledger, _ = _stores(settings)
    if not ledger.events(workflow_id):
        raise TetherError(f"the ledger has no events for workflow {workflow_id!r}; check the id")

    async def go() -> Bundle:
        client = await connect(settings)
        key = load_or_create_key(settings.checkpoint_key)
        return await export_bundle(client, ledger, workflow_id, key)

    bundle: Bundle = _run(go())
    output.write_text(bundle.model_dump_json())
    out.print(
        f"{output}: {len(bundle.manifest.events)} events with proofs, checkpoint of "
        f"{bundle.manifest.checkpoint.size} (key {bundle.manifest.checkpoint.key_id}), history, "
        f"{len(bundle.content)} policy text(s)",
        markup=False,
        highlight=False,
    )


@audit_app.command("verify-bundle")
@friendly
def audit_verify_bundle(
    path: Path,
    trust_key: Annotated[
        list[str] | None, typer.Option(help="Key id to trust (repeatable); default: any.")
    ] = None,
) -> None:
    """Verify an evidence bundle offline: signatures, hashes, proofs, history, replay."""
    from temporalio.client import WorkflowHistory

    from tether.runtime.replay import replay_history

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TetherError(f"cannot read bundle {str(path)!r}: {exc.strerror}") from None
    problems = verify_bundle(raw, set(trust_key) if trust_key else None)
    if problems:
        for problem in problems:
            err.print(red("bundle broken", f": {problem}"), highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    bundle = Bundle.model_validate_json(raw)
    history = WorkflowHistory.from_json(bundle.manifest.workflow_id, bundle.history)
    run_ids = {e.run_id for e in bundle.manifest.events if e.run_id}
    report: ReplayReport = _run(
        replay_history(
            history,
            OfflineLedger(bundle.manifest.events),
            run_ids.pop() if len(run_ids) == 1 else "",
            app=_app(_settings()),
        )
    )
    cp = bundle.manifest.checkpoint
    out.print(
        f"bundle intact: {len(bundle.manifest.events)} events proven against the checkpoint of "
        f"{cp.size} events (key {cp.key_id})",
        markup=False,
        highlight=False,
    )
    _print_replay(report)
