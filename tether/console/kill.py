"""The kill-switch pages: engage with a chosen scope, a reason and a confirmation; release.

Engaging is made hard to get wrong:
- the scope is picked from a list of what exists (the global switch, the tenants of open
  requests and of earlier switches, the agents and actions the policy or the ledger
  names): a typo cannot engage a switch that halts nothing;
- the reason is required on the server, not only in the form;
- the first post answers with a confirmation page that shows what the switch will halt
  (the pending approvals in scope) and engages nothing; only the confirmed form engages.
While any switch is engaged, every page shows a banner (`app.render`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from tether.console.app import ConsoleState, Forbidden, Viewer, form_of, render, state, viewer
from tether.errors import TetherError
from tether.governance.approvals import ApprovalStatus, PendingApproval
from tether.governance.kill import GLOBAL_VALUE, ScopeKind
from tether.runtime.kill import halt_pending

router = APIRouter()
Who = Annotated[Viewer, Depends(viewer)]


def _kill_allowed(who: Viewer) -> None:
    if not who.may_kill:
        raise Forbidden(
            f"The kill switch is for operations staff. You are signed in as {who.person}, "
            "who holds no operations role; ask an operator to engage or release it."
        )


@dataclass
class Known:
    """What a switch may be engaged on, by scope kind; and each open request's tenant."""

    names: dict[str, list[str]] = field(default_factory=dict)
    tenant_of: dict[str, str] = field(default_factory=dict)


def _literal(name: str) -> bool:
    return bool(name) and not any(c in name for c in "*()[]{}?|\\^$ ")


async def known(console: ConsoleState) -> Known:
    pending = await run_in_threadpool(console.approvals.list, ApprovalStatus.PENDING)
    found = Known(tenant_of={})
    tenants = {"default"}
    client = None
    for p in pending:
        tenant = "default"
        try:
            client = client or await console.client()
            described = await client.get_workflow_handle(p.workflow_id, run_id=p.run_id).describe()
            tenant = str(await described.memo_value("tenant", "default") or "default")
        except (RPCError, TetherError):
            pass
        found.tenant_of[p.request_id] = tenant
        tenants.add(tenant)

    def from_stores() -> tuple[set[str], set[str], set[str]]:
        document = console.policy().document
        agents = {a for a, _ in document.agent_roles if a.startswith("agent:")}
        agents |= {r.subject for r in document.rules if r.subject.startswith("agent:")}
        actions = {r.action for r in document.rules if _literal(r.action)}
        seen_agents, seen_actions = console.ledger.distinct_agents_and_actions()
        agents |= {a for a in seen_agents if a.startswith("agent:")}
        actions |= {a for a in seen_actions if _literal(a)}
        agents |= {p.agent for p in pending}
        actions |= {p.action for p in pending}
        past = {r.value for r in console.kills.status(False) if r.kind is ScopeKind.TENANT}
        return agents, actions, past

    agents, actions, past = await run_in_threadpool(from_stores)
    found.names = {
        ScopeKind.GLOBAL.value: [GLOBAL_VALUE],
        ScopeKind.TENANT.value: sorted(tenants | past),
        ScopeKind.AGENT.value: sorted(agents),
        ScopeKind.ACTION.value: sorted(actions),
    }
    return found


def _halts(
    found: Known, pending: list[PendingApproval], kind: str, value: str
) -> list[PendingApproval]:
    def covered(p: PendingApproval) -> bool:
        return (
            kind == ScopeKind.GLOBAL.value
            or (kind == ScopeKind.TENANT.value and found.tenant_of.get(p.request_id) == value)
            or (kind == ScopeKind.AGENT.value and p.agent == value)
            or (kind == ScopeKind.ACTION.value and p.action == value)
        )

    return [p for p in pending if covered(p)]


@router.get("/kill", response_class=HTMLResponse)
async def kill_page(request: Request, who: Who) -> Response:
    _kill_allowed(who)
    console = state(request)
    records = await run_in_threadpool(console.kills.status, False)
    return render(request, "kill.html", who, records=records, known=(await known(console)).names)


def _target(fields: dict[str, str]) -> tuple[str, str]:
    """The scope a form names: `target` ('kind|value', from the pick-list), else the
    separate `kind` and `value` fields."""
    if "target" in fields:
        kind, _, value = fields["target"].partition("|")
        return kind, value
    return fields.get("kind", ""), fields.get("value", "").strip()


@router.post("/kill/engage", response_class=HTMLResponse)
async def kill_engage(request: Request, who: Who) -> Response:
    fields = await form_of(request, who)
    _kill_allowed(who)
    console = state(request)
    kind, value = _target(fields)
    if kind == ScopeKind.GLOBAL.value and not value:
        value = GLOBAL_VALUE
    reason = fields.get("reason", "").strip()

    def refused(message: str) -> Response:
        return render(
            request, "done.html", who, 400, title="Kill switch", message=message, back="/kill"
        )

    if kind not in {k.value for k in ScopeKind}:
        return refused(
            f"kill-switch scope {kind!r} is unknown; choose one of "
            f"{', '.join(k.value for k in ScopeKind)} from the list"
        )
    if not reason:
        return refused(
            "A kill switch needs a reason: it is recorded, and every run it halts is told it."
        )
    found = await known(console)
    if value not in found.names.get(kind, []):
        shown = ", ".join(found.names.get(kind, [])[:8]) or "none yet"
        return refused(
            f"no {kind} named {value!r} is known here (known: {shown}); pick it from the "
            "list, so that a typo cannot engage a switch that halts nothing"
        )
    pending = await run_in_threadpool(console.approvals.list, ApprovalStatus.PENDING)
    halts = _halts(found, pending, kind, value)
    if fields.get("confirm") != "1":
        return render(
            request, "kill_confirm.html", who, kind=kind, value=value, reason=reason, halts=halts
        )
    try:
        record = await run_in_threadpool(
            lambda: console.kills.engage(kind, value, reason=reason, engaged_by=who.person)
        )
    except TetherError as exc:
        return refused(str(exc))
    message = f"Engaged: {record.describe()}."
    try:
        done = await halt_pending(await console.client(), console.approvals, record)
        message += f" Halted {len(done.halted)} pending approval(s)."
        if done.unreachable:
            message += f" Could not reach {', '.join(done.unreachable)}."
    except TetherError as exc:
        message += f" Pending approvals were not halted ({exc}); engage again to retry."
    return render(request, "done.html", who, title="Kill switch", message=message, back="/kill")


@router.post("/kill/release", response_class=HTMLResponse)
async def kill_release(request: Request, who: Who) -> Response:
    fields = await form_of(request, who)
    _kill_allowed(who)
    console = state(request)
    kind, value = _target(fields)
    try:
        record = await run_in_threadpool(
            lambda: console.kills.release(kind, value, released_by=who.person)
        )
    except TetherError as exc:
        return render(request, "done.html", who, 400, title="Kill switch", message=str(exc))
    message = f"Released: {record.kind.value} {record.value!r} by {who.person}."
    return render(request, "done.html", who, title="Kill switch", message=message, back="/kill")
