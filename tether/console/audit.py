"""Auditor pages: search runs, a run's timeline and verification, replay, evidence, overview.

Everything is read through the verification plane's functions (`Ledger.search`,
`Ledger.verify`, `verify_against`, `timeline`, `replay_workflow`, `export_bundle`), the
same the `tether audit` commands call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from tether.console.app import ConsoleState, Forbidden, Viewer, form_of, render, state, viewer
from tether.console.charts import bars, stacked_bars, timeline_svg
from tether.console.details import five_answers, spend
from tether.console.metrics import TIERS, overview
from tether.errors import CheckpointError, TetherError
from tether.verification.audit import tree_head, verify_against
from tether.verification.checkpoint import Checkpoint, load_or_create_key, sign
from tether.verification.events import RecordedEvent
from tether.verification.forensics import timeline
from tether.verification.query import EventQuery

router = APIRouter()


async def auditor(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    if not who.may_audit:
        raise Forbidden(
            f"{who.person!r} holds none of the roles that may audit (console_auditor_roles)"
        )
    return who


Auditor = Annotated[Viewer, Depends(auditor)]
FILTERS = ("workflow_id", "agent", "action", "tier", "outcome", "kind", "since", "until")


@router.get("/runs", response_class=HTMLResponse)
async def runs(request: Request, who: Auditor) -> Response:
    params = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    query = EventQuery(**{k: v for k, v in params.items() if v}, limit=500)
    console = state(request)
    try:
        found = await run_in_threadpool(console.ledger.search, query)
        error = ""
    except ValueError as exc:
        found, error = [], str(exc).replace("--", "")
    grouped: dict[str, list[RecordedEvent]] = {}
    for e in reversed(found):  # the run with the newest match first
        if e.workflow_id:  # ledger-wide events (policy loads, kill switches) are no run
            grouped.setdefault(e.workflow_id, []).insert(0, e)
    code = 400 if error else 200
    return render(
        request, "runs.html", who, code, params=params, runs=grouped, error=error, tiers=TIERS
    )


def latest_checkpoint(folder: Path) -> tuple[Checkpoint | None, str]:
    """The largest valid checkpoint in `folder`, and the name of its file."""
    best: tuple[Checkpoint | None, str] = (None, "")
    if not folder.is_dir():
        return best
    for path in sorted(folder.glob("*.json")):
        try:
            cp = Checkpoint.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError):
            continue
        if best[0] is None or cp.size >= best[0].size:
            best = (cp, path.name)
    return best


def _verification(console: ConsoleState) -> dict[str, Any]:
    report = console.ledger.verify()
    cp, name = latest_checkpoint(console.settings.console_checkpoint_dir)
    against = verify_against(console.ledger, cp) if cp is not None else None
    return {"chain": report, "checkpoint": cp, "checkpoint_file": name, "against": against}


@router.get("/runs/{workflow_id}", response_class=HTMLResponse)
async def run_page(request: Request, workflow_id: str, who: Auditor) -> Response:
    console = state(request)
    events = await run_in_threadpool(console.ledger.events, workflow_id)
    if not events:
        return render(
            request,
            "error.html",
            who,
            404,
            title="No such run",
            message=f"The ledger has no events for workflow {workflow_id!r}.",
        )
    entries = timeline(events)
    checks = await run_in_threadpool(_verification, console)
    status, replayed = "unknown", None
    try:
        client = await console.client()
        described = await client.get_workflow_handle(workflow_id).describe()
        status = described.status.name.lower() if described.status else "unknown"
        if status not in ("running", "unknown"):  # a finished history replays as a whole
            from tether.runtime.replay import replay_workflow

            replayed = await replay_workflow(client, console.ledger, workflow_id, app=console.app())
    except (RPCError, TetherError):
        pass
    return render(
        request,
        "run.html",
        who,
        workflow_id=workflow_id,
        status=status,
        replayed=replayed,
        rows=[(e, t, five_answers(e)) for e, t in zip(events, entries, strict=True)],
        picture=timeline_svg(events, entries),
        spend=spend(events),
        **checks,
    )


@router.get("/runs/{workflow_id}/replay", response_class=HTMLResponse)
async def replay(request: Request, workflow_id: str, who: Auditor) -> Response:
    from tether.runtime.replay import replay_workflow

    console = state(request)
    try:
        report = await replay_workflow(
            await console.client(), console.ledger, workflow_id, app=console.app()
        )
        error = ""
    except (RPCError, TetherError) as exc:
        report, error = None, f"cannot replay {workflow_id!r}: {getattr(exc, 'message', exc)}"
    return render(
        request,
        "replay.html",
        who,
        200 if report is not None else 404,
        workflow_id=workflow_id,
        report=report,
        error=error,
    )


@router.get("/runs/{workflow_id}/bundle")
async def bundle(request: Request, workflow_id: str, who: Auditor) -> Response:
    from tether.runtime.evidence import export_bundle

    console = state(request)
    try:
        key = await run_in_threadpool(load_or_create_key, console.settings.checkpoint_key)
        made = await export_bundle(await console.client(), console.ledger, workflow_id, key)
    except TetherError as exc:
        return render(request, "error.html", who, 404, title="No bundle", message=str(exc))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)
    return Response(
        made.model_dump_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{safe}.evidence.json"'},
    )


@router.post("/checkpoints", response_class=HTMLResponse)
async def checkpoint(request: Request, who: Auditor) -> Response:
    fields = await form_of(request, who)
    console = state(request)

    def write() -> str:
        key = load_or_create_key(console.settings.checkpoint_key)
        cp = sign(tree_head(console.ledger), key)
        folder = console.settings.console_checkpoint_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"checkpoint-{cp.size:012d}.json"
        path.write_text(cp.model_dump_json(indent=2))
        return f"Signed a checkpoint of {cp.size} events (key {cp.key_id}) as {path.name}."

    try:
        message = await run_in_threadpool(write)
    except (OSError, CheckpointError) as exc:
        message = f"Could not sign a checkpoint: {exc}"
    back = fields.get("back", "/overview")
    back = back if back.startswith("/") and not back.startswith("//") else "/overview"
    return render(request, "done.html", who, title="Checkpoint", message=message, back=back)


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(request: Request, who: Auditor, days: int = 7) -> Response:
    days = min(max(days, 1), 90)
    until = datetime.now(UTC)
    since = until - timedelta(days=days)
    console = state(request)

    def load() -> tuple[list[RecordedEvent], list[RecordedEvent], list[RecordedEvent]]:
        def of(kind: str) -> list[RecordedEvent]:
            q = EventQuery(kind=kind, since=since.isoformat(), limit=50_000)
            return console.ledger.search(q)

        return of("decision"), of("approval.requested") + of("approval.decided"), of("model.call")

    decisions, approvals, calls = await run_in_threadpool(load)
    data = overview(decisions, approvals, calls, since, until)
    return render(
        request,
        "overview.html",
        who,
        days=days,
        data=data,
        tiers_chart=stacked_bars(data.buckets, data.by_tier, "decisions by tier"),
        denials_chart=bars(
            [r for r, _ in data.denials], [n for _, n in data.denials], "denials by rule"
        ),
        waits_chart=bars(
            [r for r, _ in data.approval_waits],
            [s for _, s in data.approval_waits],
            "approval wait",
            " s",
        ),
        latency_chart=bars(
            [m for m, _ in data.model_latency],
            [v for _, v in data.model_latency],
            "model latency",
            " ms",
        ),
        cost_chart=bars(
            [m for m, _ in data.model_cost], [v for _, v in data.model_cost], "model cost", " USD"
        ),
    )
