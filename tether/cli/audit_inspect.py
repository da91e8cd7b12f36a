"""`tether audit show | search | what-if`: read the ledger's events of a workflow, find
events across workflows, and re-decide a workflow's steps under another policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from tether.cli.common import _settings, _stores, emit_table, err, event_line, friendly, out
from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.verification.forensics import timeline, what_if
from tether.verification.query import EventQuery


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
        out.print(f"{e.recorded_at[:19]} {e.workflow_id} " + event_line(e))
    out.print(f"{len(found)} event(s)")


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
    err.print(f"{sum(r.changed for r in rows)} of {len(rows)} decision(s) would change")
