"""What a page shows about a request or a run, derived from recorded events. Pure functions.

Eligibility is the control plane's own rule (`governance.approvals.check_approval`), the
one the workflow applies: the console offers a request to exactly the people the
workflow would accept a decision from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, JsonValue

from tether.errors import ApprovalError, TetherError
from tether.governance.approvals import ApprovalDecision, PendingApproval, check_approval
from tether.governance.presentation import field_formats, format_value
from tether.verification.events import LedgerEvent, RecordedEvent


def why_not(pending: PendingApproval, person: str, now: datetime) -> str:
    """ "" when `person` may decide `pending` now; otherwise why not."""
    probe = ApprovalDecision(request_id=pending.request_id, approver=person, approve=True)
    try:
        check_approval(pending, probe, now)
    except ApprovalError as exc:
        return str(exc)
    if person in pending.approved_by:
        return (
            f"{person!r} has already approved request {pending.request_id!r}; its quorum of "
            f"{pending.quorum} needs other people"
        )
    return ""


def urgency(pending: PendingApproval) -> tuple[float, str]:
    """Sort key: the nearest deadline first, then the newest request."""
    deadline = pending.deadline.timestamp() if pending.deadline else float("inf")
    return (deadline, pending.request_id)


def argument_rows(summary: str) -> list[tuple[str, str]] | None:
    """The arguments as (name, value) rows; None when the summary is not a JSON object."""
    try:
        parsed = json.loads(summary)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    return [(str(k), _text(v)) for k, v in parsed.items()]


def _text(value: JsonValue) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class Influence(BaseModel):
    """One thing that may have influenced a step: a model call or an earlier result."""

    kind: str
    ref: str
    detail: str


def influences(events: Sequence[RecordedEvent], step: int | None) -> list[Influence]:
    """What the decision of `step` names as its inputs, resolved against the run's events."""
    decision = next((e for e in events if e.kind == "decision" and e.step == step), None)
    if decision is None:
        return []
    calls = {str(e.payload.get("call_id")): e for e in events if e.kind == "model.call"}
    found: list[Influence] = []
    raw = decision.payload.get("inputs")
    for ref in raw if isinstance(raw, list) else []:
        ref = str(ref)
        call = calls.get(ref)
        if call is not None:
            p = call.payload
            found.append(
                Influence(
                    kind="model call",
                    ref=ref,
                    detail=f"{call.action} by {p.get('model', '?')} ({p.get('provider', '?')}), "
                    f"{p.get('sensitivity', '')} data, output {str(p.get('output_digest'))[:23]}…",
                )
            )
        elif ref.startswith("step:"):
            _, number, digest = [*ref.split(":", 2), "", ""][:3]
            found.append(
                Influence(kind="tool result", ref=ref, detail=f"step {number}, {digest[:23]}…")
            )
        else:
            found.append(Influence(kind="input", ref=ref, detail=ref))
    context = decision.payload.get("context")
    if isinstance(context, dict) and context:
        found.append(
            Influence(
                kind="policy context",
                ref="context",
                detail=", ".join(f"{k} = {_text(v)}" for k, v in context.items()),
            )
        )
    return found


class Spend(BaseModel):
    model_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def spend(events: Sequence[RecordedEvent]) -> Spend:
    """Model calls, tokens and cost recorded for a run so far."""
    total = Spend()
    for e in events:
        if e.kind != "model.call":
            continue
        p = e.payload
        tokens = _number(p.get("input_tokens")) + _number(p.get("output_tokens"))
        total = Spend(
            model_calls=total.model_calls + 1,
            tokens=total.tokens + int(tokens),
            cost_usd=total.cost_usd + _number(p.get("cost_usd")),
        )
    return total


def _number(value: JsonValue) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def five_answers(e: RecordedEvent) -> dict[str, str]:
    """An event's answers: what occurred, why allowed, what influenced it, outcome, replay."""
    p = e.payload
    why = ""
    if e.tier:
        why = f"{e.tier} under rule {e.rule} (policy {e.policy_version or '-'})"
        if e.kind.startswith("approval.") and e.actor:
            why += f", {e.outcome} by {e.actor}"
        reason = p.get("reason") or p.get("why")
        if reason:
            why += f": {reason}"
    inputs = p.get("inputs")
    data = ", ".join(str(i) for i in inputs) if isinstance(inputs, list) else ""
    for key in ("args_digest", "prompt_digest", "output_digest", "result_digest"):
        if p.get(key):
            data += (", " if data else "") + f"{key.removesuffix('_digest')} {str(p[key])[:23]}…"
    return {
        "what": f"{e.kind}: {e.action} {e.resource}".strip(),
        "why": why or "-",
        "data": data or "-",
        "outcome": e.outcome or "-",
        "replay": f"{e.workflow_id} run {e.run_id[:12]} step "
        + (str(e.step) if e.step is not None else "-"),
    }


# -- decision-ready requests --------------------------------------------------------------

OPEN_CLASSES = ("public", "internal")
"""Data classes whose model content anyone who may see a request reads; the others need
a role listed for them in `console_content_roles`."""


def cleared(data_class: str, roles: Sequence[str], content_roles: dict[str, list[str]]) -> bool:
    """Whether holders of `roles` may read model content of `data_class`."""
    if data_class in OPEN_CLASSES:
        return True
    return any(r in roles for r in content_roles.get(data_class, []))


class ModelContent(BaseModel):
    """What a model read and produced for a run, as an approver may see it."""

    call_id: str
    task: str
    model: str
    data_class: str
    shown: bool
    prompt: str = ""
    output: str = ""
    missing: bool = False


def model_content(
    events: Sequence[RecordedEvent],
    step: int | None,
    blob: Callable[[str], JsonValue],
    may_read: Callable[[str], bool],
) -> list[ModelContent]:
    """The model calls the decision of `step` names as inputs, with their prompt and output
    from the content store when the viewer is cleared for their data class."""
    decision = next((e for e in events if e.kind == "decision" and e.step == step), None)
    raw = decision.payload.get("inputs") if decision else None
    wanted = {str(r) for r in raw} if isinstance(raw, list) else set()
    found: list[ModelContent] = []
    for e in events:
        p = e.payload
        if e.kind != "model.call" or str(p.get("call_id")) not in wanted:
            continue
        data_class = str(p.get("sensitivity") or "internal")
        item = ModelContent(
            call_id=str(p.get("call_id")),
            task=e.action.removeprefix("model."),
            model=f"{p.get('model', '?')} ({p.get('provider', '?')})",
            data_class=data_class,
            shown=may_read(data_class),
        )
        if item.shown:
            try:
                prompt = blob(str(p.get("prompt_digest")))
                output = blob(str(p.get("output_digest")))
                item = item.model_copy(update={"prompt": _text(prompt), "output": _pretty(output)})
            except (KeyError, ValueError):
                item = item.model_copy(update={"missing": True})
        found.append(item)
    return found


def _pretty(value: JsonValue) -> str:
    """A model's output: JSON indented for reading, other text as it is."""
    text = _text(value)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


_REASON = re.compile(r"^rule '(?P<rule>[^']*)' \((?P<cond>.*)\) gives tier '(?P<tier>\w+)'$")
_WORDS = (
    ("&&", " and "),
    ("||", " or "),
    (">=", " is at least "),
    ("<=", " is at most "),
    ("!=", " is not "),
    ("==", " is "),
    (">", " is more than "),
    ("<", " is less than "),
)


def condition_words(condition: str) -> str:
    """A policy condition as a sentence: 'r.ctx.amount > 10000' → 'amount is more than 10000'."""
    text = condition.replace("r.ctx.", "")
    if text.strip() == "True":
        return "it always applies"
    marks = {op: f"\x00{i}\x00" for i, (op, _) in enumerate(_WORDS)}
    for op, mark in marks.items():
        text = text.replace(op, mark)
    for i, (_, words) in enumerate(_WORDS):
        text = text.replace(f"\x00{i}\x00", words)
    return " ".join(text.split())


def policy_words(pending: PendingApproval) -> str:
    """Why `pending` needs approval, in words."""
    who = pending.approver_role.removeprefix("role:") or "an approver"
    match = _REASON.match(pending.reason)
    if match is None:
        return f"Rule {pending.rule} asks for approval by {who}: {pending.reason}."
    return (
        f"Rule {match['rule']} applies because {condition_words(match['cond'])}, "
        f"so this step needs approval by {who}"
        + (f" ({pending.quorum} people)" if pending.quorum > 1 else "")
        + "."
    )


def age(since: datetime | None, now: datetime) -> str:
    """How long ago, as people read it: 'just now', '12m', '3h 5m', '2d 4h'."""
    if since is None:
        return "—"
    seconds = int((now - since).total_seconds())
    if seconds < 60:
        return "just now"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60}m"
    return f"{minutes}m"


def edit_value(raw: str, original: JsonValue) -> JsonValue:
    """A form's text as the JSON type of the argument it edits; ValueError when it is not."""
    text = raw.strip().replace(",", "") if isinstance(original, int | float) else raw
    if isinstance(original, bool):
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"{raw!r} is not yes or no")
    if isinstance(original, int):
        return int(text.removeprefix("$"))
    if isinstance(original, float):
        return float(text.removeprefix("$"))
    return text


class EditRow(BaseModel):
    """One argument an approver changed, both values as the tool's presentation reads them."""

    name: str
    original: str
    edited: str


def edit_rows(edited: LedgerEvent | None, formats: Mapping[str, str]) -> list[EditRow]:
    """The changes an `approval.edited` event records, each value formatted with the format
    the tool gives that argument (`formats`, from `tool_formats`: money as `$4,800.00`)."""
    if edited is None:
        return []
    edits = edited.payload.get("edits")
    original = edited.payload.get("original")
    if not isinstance(edits, dict):
        return []
    before = original if isinstance(original, dict) else {}
    return [
        EditRow(
            name=name.replace("_", " "),
            original=format_value(before.get(name), formats.get(name, "")),
            edited=format_value(value, formats.get(name, "")),
        )
        for name, value in edits.items()
    ]


def tool_formats(tool: str, load_tools: Callable[[], object]) -> dict[str, str]:
    """The argument formats `tool` declares (its title template and key fields); `load_tools`
    imports the app's tool modules, which registers them. {} for a tool not found."""
    from tether.activities.tools import REGISTRY

    if tool and tool not in REGISTRY:
        try:
            load_tools()
        except TetherError:  # no app configured: the values are shown unformatted
            return {}
    spec = REGISTRY.get(tool)
    return field_formats(spec.title, spec.key_fields) if spec is not None else {}
