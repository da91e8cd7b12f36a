"""`tether kill` and `tether budget`: the kill switch and per-agent budgets.

Thin: each command calls `tether.kill`, `governance.kill` or `governance.budget`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import _run, _settings, emit_table, friendly, out
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import TetherError
from tether.governance.budget import AgentBudget, Budgets, OnBreach, parse_window
from tether.governance.kill import KillSwitches
from tether.verification.ledger import Ledger

kill_app = typer.Typer(
    help="Stop agents at once: global, per tenant, per agent or per action.", no_args_is_help=True
)
budget_app = typer.Typer(
    help="Per-agent token and cost budgets over rolling windows.", no_args_is_help=True
)

Kind = Annotated[str, typer.Argument(help="Scope: global, tenant, agent or action.")]
Value = Annotated[
    str, typer.Argument(help="The tenant, agent id or action; none for global.", show_default=False)
]
Actor = Annotated[str, typer.Option("--as", help="Who does this, e.g. user:ops.")]


def _engine(settings: Settings) -> tuple[Ledger, KillSwitches]:
    ledger = Ledger(make_engine(settings.database_url))
    return ledger, KillSwitches(ledger.engine, ledger)


@kill_app.command("engage")
@friendly
def kill_engage(
    kind: Kind,
    as_user: Actor,
    value: Value = "",
    reason: Annotated[str, typer.Option(help="Why; shown to everyone it stops.")] = "",
) -> None:
    """Deny every new decision in scope and reject its pending approvals."""
    from tether.governance.store import ApprovalStore
    from tether.runtime.client import connect
    from tether.runtime.kill import halt_pending

    settings = _settings()
    ledger, switches = _engine(settings)
    record = switches.engage(kind, value, reason=reason, engaged_by=as_user)
    out.print(f"engaged: {record.describe()}")

    async def go() -> None:
        try:
            client = await connect(settings)
        except TetherError as exc:
            raise TetherError(
                f"the switch is engaged, but pending approvals were not halted: {exc}; run "
                "this command again once Temporal is reachable"
            ) from None
        done = await halt_pending(client, ApprovalStore(ledger.engine), record)
        for wid in done.halted:
            out.print(f"halted pending approval of {wid}")
        for wid in done.unreachable:
            out.print(f"could not signal {wid} (finished or gone)")

    _run(go())


@kill_app.command("release")
@friendly
def kill_release(kind: Kind, as_user: Actor, value: Value = "") -> None:
    """Release an engaged kill switch: new decisions in scope run again."""
    _, switches = _engine(_settings())
    record = switches.release(kind, value, released_by=as_user)
    out.print(f"released: {record.kind.value} {record.value!r} by {as_user}")


@kill_app.command("status")
@friendly
def kill_status(
    all_: Annotated[bool, typer.Option("--all", help="Include released switches.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List engaged kill switches."""
    _, switches = _engine(_settings())
    records = switches.status(include_released=all_)
    if as_json:
        out.print_json(data=[r.model_dump(mode="json") for r in records])
        return
    emit_table(
        f"{len(records)} kill switch(es)",
        ("scope", "value", "reason", "engaged by", "engaged at", "released at"),
        [
            (r.kind.value, r.value, r.reason, r.engaged_by, r.engaged_at, r.released_at or "-")
            for r in records
        ],
        ids=("value", "engaged by"),
    )


def _budgets(settings: Settings) -> Budgets:
    ledger = Ledger(make_engine(settings.database_url))
    return Budgets(ledger.engine, ledger)


@budget_app.command("set")
@friendly
def budget_set(
    subject: Annotated[str, typer.Argument(help="agent:NAME or role:NAME.")],
    as_user: Actor,
    window: Annotated[str, typer.Option(help="Rolling window: 90s, 30m, 24h, 7d.")] = "24h",
    max_tokens: Annotated[int, typer.Option(help="Token limit; 0 for none.")] = 0,
    max_cost: Annotated[float, typer.Option(help="Cost limit in USD; 0 for none.")] = 0.0,
    on_breach: Annotated[str, typer.Option(help="deny, or approve (escalate).")] = "deny",
    approver: Annotated[str, typer.Option(help="Approver role for --on-breach approve.")] = "",
) -> None:
    """Create or replace the budget of an agent or a role."""
    try:
        breach = OnBreach(on_breach)
    except ValueError:
        raise TetherError(f"--on-breach {on_breach!r} is not 'deny' or 'approve'") from None
    budget = _budgets(_settings()).set(
        AgentBudget(
            subject=subject,
            window_seconds=parse_window(window),
            max_tokens=max_tokens,
            max_cost_usd=max_cost,
            on_breach=breach,
            approver_role=approver,
        ),
        actor=as_user,
    )
    out.print(f"budget of {budget.subject} set")


@budget_app.command("show")
@friendly
def budget_show(
    subject: Annotated[str | None, typer.Argument(help="One subject; all when left out.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Budgets and their usage in the current window."""
    usage = _budgets(_settings()).show(subject)
    if as_json:
        out.print_json(data=[u.model_dump(mode="json") for u in usage])
        return
    emit_table(
        f"{len(usage)} budget(s)",
        ("subject", "window", "tokens", "cost", "open", "on breach"),
        [
            (
                u.budget.subject,
                f"{u.budget.window_seconds}s",
                f"{u.tokens} / {u.budget.max_tokens or '-'}",
                f"${u.cost_usd:.4f} / "
                + (f"${u.budget.max_cost_usd:.4f}" if u.budget.max_cost_usd else "-"),
                str(u.open_reservations),
                u.budget.on_breach.value
                + (f" ({u.budget.approver_role})" if u.budget.approver_role else ""),
            )
            for u in usage
        ],
        ids=("subject",),
    )


@budget_app.command("clear")
@friendly
def budget_clear(
    subject: Annotated[str, typer.Argument(help="agent:NAME or role:NAME.")], as_user: Actor
) -> None:
    """Remove a budget (its usage history stays)."""
    _budgets(_settings()).clear(subject, actor=as_user)
    out.print(f"budget of {subject} cleared")
