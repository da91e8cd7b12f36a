"""`tether policy impact NEW_POLICY [--since 30d] [--json]`: what a policy would change over
the decisions the ledger recorded (verification.impact), shown as tables or JSON.

A thin wrapper: it loads the policy, reads the ledger of the settings and prints the
report; `print_summary` is shared with `tether policy push --max-changes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from tether.cli.common import _settings, emit_table, err, friendly, out
from tether.core.db import make_engine
from tether.governance.policy import PolicyEngine
from tether.governance.reload import read_text
from tether.verification.impact import (
    PAGE,
    ImpactExample,
    ImpactReport,
    count_decisions,
    impact,
    window_start,
)
from tether.verification.ledger import Ledger

SinceOption = Annotated[
    str, typer.Option("--since", help="Window: a duration back from now (30d, 12h) or a time.")
]


def _where(e: ImpactExample) -> str:
    return f"{e.workflow_id} step {e.step}: {e.action} {e.resource}"


def print_summary(report: ImpactReport) -> None:
    """The one-paragraph headline of a report, on stderr."""
    err.print(
        f"policy {report.policy_version} over {report.decisions} decision(s) recorded since "
        f"{report.since}: {report.changed} would change tier ({report.stricter} stricter, "
        f"{report.looser} looser), {report.rerouted} would keep their tier under another "
        f"rule; {report.runs_affected} run(s) affected; {report.skipped} skipped "
        "(kill switch or ungoverned)"
    )


def print_report(report: ImpactReport) -> None:
    """Transitions, rules and runs as tables (tab-separated off a terminal)."""
    emit_table(
        "tier transitions",
        ("transition", "decisions", "examples"),
        [
            (
                Text(t.label, style="red" if t.after in ("approve", "deny") else "yellow"),
                str(t.decisions),
                "; ".join(_where(e) for e in t.examples),
            )
            for t in report.transitions
        ],
        ids=("transition",),
    )
    emit_table(
        "by recorded rule",
        ("rule", "decisions", "changed", "rerouted", "now decided by"),
        [
            (
                r.rule,
                str(r.decisions),
                str(r.changed),
                str(r.rerouted),
                ", ".join(f"{rule} ({n})" for rule, n in sorted(r.now_decided_by.items())),
            )
            for r in report.rules
        ],
        ids=("rule",),
    )
    emit_table(
        f"runs affected ({report.runs_affected}, the first {len(report.runs)} shown)",
        ("workflow", "run", "changed", "transitions"),
        [(r.workflow_id, r.run_id, str(r.changed), ", ".join(r.transitions)) for r in report.runs],
        ids=("workflow", "run"),
    )
    print_summary(report)


@friendly
def policy_impact(
    path: Path,
    since: SinceOption = "30d",
    model: Annotated[Path | None, typer.Option(help="casbin model (default: configured).")] = None,
    examples: Annotated[int, typer.Option(help="Examples kept per transition and rule.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-decide every decision recorded since --since under PATH; report what would change."""
    settings = _settings()
    engine = PolicyEngine.from_texts(
        read_text(model or settings.policy_model), read_text(path), source=str(path)
    )
    ledger = Ledger(make_engine(settings.database_url))
    total = count_decisions(ledger, window_start(since))
    columns = (TextColumn("re-deciding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=total < PAGE) as progress:
        task = progress.add_task("impact", total=total)
        report = impact(
            ledger,
            engine,
            since=since,
            examples=examples,
            progress=lambda done: progress.update(task, completed=done),
        )
    if as_json:
        out.print_json(report.model_dump_json())
        return
    print_report(report)
