"""Auditor pages: search runs, a run's timeline and verification, replay, evidence, overview.

Everything is read through the verification plane's functions (`Ledger.search`,
`Ledger.verify`, `verify_against`, `timeline`, `replay_workflow`, `export_bundle`), the
same the `tether audit` commands call.

Stored content (prompts, model outputs, tool arguments and results, named in events by
their digest) opens from a run's page for people *cleared* for it (`cleared`): holders of
`console_auditor_roles`, or — when that list is empty and everyone signed in may audit —
holders of any role the policy grants (`g2`). A signed-in person with no role sees the
digests only. Content is served only under a run whose events name its digest.
"""

from __future__ import annotations

import json
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from tether.console.app import ConsoleState, Forbidden, Viewer, form_of, render, state, viewer
from tether.console.audit_checks import _verification
from tether.console.charts import bars, stacked_bars
from tether.console.details import five_answers, spend
from tether.console.metrics import TIERS, overview
from tether.console.runinfo import RunStory, run_story
from tether.console.timeline import human, timeline_svg
from tether.errors import CheckpointError, TetherError
from tether.verification.audit import tree_head
from tether.verification.checkpoint import load_or_create_key, sign
from tether.verification.events import RecordedEvent
from tether.verification.forensics import timeline
from tether.verification.query import EventQuery

router = APIRouter()


async def auditor(who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    if not who.may_audit:
        raise Forbidden(
            f"The audit pages are for auditors. You are signed in as {who.person}, who holds "
            "no auditor role; ask whoever runs the console to grant you one."
        )
    return who


def cleared(console: ConsoleState, who: Viewer) -> bool:
    """Whether `who` may open stored content (see the module docstring)."""
    auditors = console.settings.console_auditor_roles
    if auditors:
        return any(r in who.roles for r in auditors)
    return bool(who.roles)


DIGEST_KEYS = ("args_digest", "prompt_digest", "output_digest", "result_digest")


def _digests(events: list[RecordedEvent]) -> set[str]:
    return {
        str(e.payload[k]) for e in events for k in DIGEST_KEYS if isinstance(e.payload.get(k), str)
    }


def _held(console: ConsoleState, digests: set[str]) -> set[str]:
    """The digests whose content the store holds."""
    found = set()
    for d in digests:
        try:
            console.ledger.blob(d)
        except (KeyError, ValueError):
            continue
        found.add(d)
    return found


def _comment(e: RecordedEvent) -> str:
    """The words a person or a switch gave with an event: a comment or a reason."""
    for key in ("comment", "reason", "why"):
        value = e.payload.get(key)
        if isinstance(value, str) and value.strip() and value != "deadline passed":
            if key == "reason" and e.kind == "decision":
                continue  # the policy's reason is shown under "why allowed"
            return value
    return ""


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
            message=f"The ledger holds nothing about a run called {workflow_id!r}. Search the "
            "runs to find the one you mean.",
        )
    entries = timeline(events)
    checks = await run_in_threadpool(_verification, console)
    status, replayed, story = "unknown", None, RunStory()
    try:
        client = await console.client()
        described = await client.get_workflow_handle(workflow_id).describe()
        status = described.status.name.lower() if described.status else "unknown"
        story = await run_story(client, workflow_id, events)
        if status not in ("running", "unknown"):  # a finished history replays as a whole
            from tether.runtime.replay import replay_workflow

            replayed = await replay_workflow(client, console.ledger, workflow_id, app=console.app())
    except (RPCError, TetherError):
        pass
    may_open = cleared(console, who)
    held = await run_in_threadpool(_held, console, _digests(events)) if may_open else set()
    rows = []
    for e, t in zip(events, entries, strict=True):
        links = [
            (k.removesuffix("_digest"), str(e.payload[k]))
            for k in DIGEST_KEYS
            if isinstance(e.payload.get(k), str)
        ]
        rows.append(
            {
                "e": e,
                "a": five_answers(e),
                "at": e.recorded_at[11:23],
                "since": "start" if t.since_start_ms == 0 else "+" + human(t.since_start_ms),
                "took": human(t.duration_ms) if t.duration_ms is not None else "",
                "comment": _comment(e),
                "digests": links,
            }
        )
    return render(
        request,
        "run.html",
        who,
        workflow_id=workflow_id,
        status=status,
        story=story,
        replayed=replayed,
        rows=rows,
        cleared=may_open,
        held=held,
        started=events[0].recorded_at[:19].replace("T", " "),
        agent=events[0].agent,
        picture=timeline_svg(events, datetime.now(UTC), status == "running"),
        spend=spend(events),
        **checks,
    )


@router.get("/runs/{workflow_id}/content/{key}", response_class=HTMLResponse)
async def content(request: Request, workflow_id: str, key: str, who: Auditor) -> Response:
    """Stored content a run's event names by digest, for people cleared to read it."""
    console = state(request)
    if not cleared(console, who):
        raise Forbidden(
            f"Stored prompts, outputs and tool data are shown to auditors only. You are "
            f"signed in as {who.person}, who is not cleared to read them; the run's page "
            "still shows their digests."
        )
    events = await run_in_threadpool(console.ledger.events, workflow_id)
    named = [
        (e, k)
        for e in events
        for k in DIGEST_KEYS
        if e.payload.get(k) == key  # only content this run's events name
    ]
    try:
        value = await run_in_threadpool(console.ledger.blob, key) if named else None
        problem = "" if named else "not named"
    except KeyError:
        value, problem = None, "not stored"
    except ValueError:
        value, problem = None, "altered"
    if problem == "altered":
        message = f"The content stored under {key} does not match its digest: it was altered."
        return render(request, "error.html", who, 409, title="Content altered", message=message)
    if problem:
        return render(
            request,
            "error.html",
            who,
            404,
            title="No such content",
            message=f"Run {workflow_id!r} names no stored content {key!r}"
            + (" that the store still holds." if problem == "not stored" else "."),
        )
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    if isinstance(value, str):  # a model's JSON output reads better indented
        with suppress(ValueError):
            text = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    e, k = named[0]
    sensitivity = next(
        (str(x.payload["sensitivity"]) for x, _ in named if x.payload.get("sensitivity")), ""
    )
    return render(
        request,
        "content.html",
        who,
        workflow_id=workflow_id,
        key=key,
        text=text,
        event=e,
        what=k.removesuffix("_digest"),
        sensitivity=sensitivity,
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
            fmt=lambda s: human(s * 1000),
        ),
        outcomes_chart=bars(
            list(data.approval_outcomes),
            [float(n) for n in data.approval_outcomes.values()],
            "approval outcomes",
        ),
        latency_chart=bars(
            [m for m, _ in data.model_latency],
            [v for _, v in data.model_latency],
            "model latency",
            fmt=human,
        ),
        cost_chart=bars(
            [m for m, _ in data.model_cost], [v for _, v in data.model_cost], "model cost", " USD"
        ),
    )
