"""`tether audit replay | export | verify-bundle`: replay a workflow's Temporal history
against today's code and cross-check it with the ledger; write and verify a signed,
self-contained evidence bundle (offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from temporalio.service import RPCError

from tether.cli.audit_keys import TrustFiles, TrustKeys, pinned
from tether.cli.common import _app, _run, _settings, _stores, err, friendly, out, red
from tether.errors import TetherError
from tether.runtime.replay import ReplayReport
from tether.verification.bundle import Bundle, verify_bundle
from tether.verification.checkpoint import load_or_create_key
from tether.verification.query import OfflineLedger


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
        runs = f", {len(report.runs)} runs continued as new" if len(report.runs) > 1 else ""
        out.print(
            f"replay: today's code reproduces {report.workflow_id} (run {report.run_id}{runs})"
        )
    else:
        err.print(red("replay failed", f": {report.replay_error}"))
    for d in report.divergences:
        err.print(
            red("divergence", f" (history event {d.event_id}, ledger entry {d.seq}): {d.problem}")
        )
    if not report.divergences:
        out.print(f"cross-check: {report.facts_checked} activity results match the ledger")
    if not report.ok:
        raise typer.Exit(1)


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
        f"{len(bundle.content)} policy text(s)"
    )


@friendly
def audit_verify_bundle(
    path: Path,
    trust_key: TrustKeys = None,
    trust_file: TrustFiles = None,
) -> None:
    """Verify an evidence bundle offline against pinned keys: signatures, hashes, proofs,
    history, replay."""
    from temporalio.client import WorkflowHistory

    from tether.runtime.codec import payload_codec
    from tether.runtime.replay import replay_history

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TetherError(f"cannot read bundle {str(path)!r}: {exc.strerror}") from None
    settings = _settings()
    problems = verify_bundle(raw, pinned(settings, trust_key, trust_file))
    if problems:
        for problem in problems:
            err.print(red("bundle broken", f": {problem}"))
        raise typer.Exit(1)
    bundle = Bundle.model_validate_json(raw)
    history = WorkflowHistory.from_json(bundle.manifest.workflow_id, bundle.history)
    run_ids = {e.run_id for e in bundle.manifest.events if e.run_id}
    settings = _settings()
    report: ReplayReport = _run(
        replay_history(
            history,
            OfflineLedger(bundle.manifest.events),
            run_ids.pop() if len(run_ids) == 1 else "",
            app=_app(settings),
            payload_codec=payload_codec(settings),
        )
    )
    cp = bundle.manifest.checkpoint
    out.print(
        f"bundle intact: {len(bundle.manifest.events)} events proven against the checkpoint of "
        f"{cp.size} events, signed by pinned key {cp.key_id}"
    )
    _print_replay(report)
