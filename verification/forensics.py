"""Questions auditors ask of recorded events: what-if under another policy, cross-checks
against workflow history, and timelines. Pure functions over ledger events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, JsonValue

from tether.governance.policy import PolicyEngine
from tether.governance.types import DecisionRequest
from tether.verification.events import RecordedEvent


class WhatIfRow(BaseModel):
    seq: int
    step: int | None
    agent: str
    action: str
    resource: str
    recorded_tier: str
    recorded_rule: str
    new_tier: str
    new_rule: str

    @property
    def changed(self) -> bool:
        return self.recorded_tier != self.new_tier


def what_if(events: Sequence[RecordedEvent], policy: PolicyEngine) -> list[WhatIfRow]:
    """Re-decide every recorded decision under `policy`; nothing is executed or written."""
    rows: list[WhatIfRow] = []
    for e in events:
        if e.kind != "decision" or e.rule == "ungoverned":
            continue
        context = e.payload.get("context")
        decision = policy.decide(
            DecisionRequest(
                agent=e.agent,
                action=e.action,
                resource=e.resource,
                context=context if isinstance(context, dict) else {},
            )
        )
        rows.append(
            WhatIfRow(
                seq=e.seq,
                step=e.step,
                agent=e.agent,
                action=e.action,
                resource=e.resource,
                recorded_tier=e.tier,
                recorded_rule=e.rule,
                new_tier=decision.tier.value,
                new_rule=decision.rule,
            )
        )
    return rows


class HistoryFact(BaseModel):
    """One activity outcome as Temporal's history holds it, reduced to what the ledger keeps."""

    event_id: int
    kind: str
    """`decision`, `model.call` or `tool.executed`."""
    step: int | None = None
    value: dict[str, JsonValue]


class Divergence(BaseModel):
    event_id: int | None
    seq: int | None
    problem: str


def cross_check(facts: Sequence[HistoryFact], events: Sequence[RecordedEvent]) -> list[Divergence]:
    """Compare history's activity results with the ledger's digests of the same steps."""
    problems: list[Divergence] = []
    by_kind: dict[str, list[RecordedEvent]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    decisions = iter(by_kind.get("decision", []))
    calls = {str(e.payload.get("call_id")): e for e in by_kind.get("model.call", [])}
    executed = {e.step: e for e in by_kind.get("tool.executed", [])}
    seen: set[int] = set()
    for fact in facts:
        if fact.kind == "decision":
            recorded = next(decisions, None)
            if recorded is None:
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=None,
                        problem="history has a decision the ledger lacks",
                    )
                )
                continue
            seen.add(recorded.seq)
            got = (fact.value.get("tier"), fact.value.get("rule"), fact.value.get("policy_version"))
            want = (recorded.tier, recorded.rule, recorded.policy_version)
            if got != want:
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=recorded.seq,
                        problem=f"decision differs: history {got}, ledger {want}",
                    )
                )
        elif fact.kind == "model.call":
            call = calls.get(str(fact.value.get("call_id")))
            if not fact.value.get("call_id"):  # an adapter's call, known by its answer
                call = next(
                    (
                        e
                        for e in by_kind.get("model.call", [])
                        if e.seq not in seen
                        and e.payload.get("output_digest") == fact.value.get("output_digest")
                    ),
                    None,
                )
            if call is None:
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=None,
                        problem=f"model call {fact.value.get('call_id')!r} is not in the ledger",
                    )
                )
                continue
            seen.add(call.seq)
            if fact.value.get("output_digest") != call.payload.get("output_digest"):
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=call.seq,
                        problem="model output in history does not match the ledger's digest",
                    )
                )
        elif fact.kind == "tool.executed":
            tool = executed.get(fact.step)
            if tool is None:
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=None,
                        problem=f"tool result of step {fact.step} is not in the ledger",
                    )
                )
                continue
            seen.add(tool.seq)
            if fact.value.get("result_digest") != tool.payload.get("result_digest"):
                problems.append(
                    Divergence(
                        event_id=fact.event_id,
                        seq=tool.seq,
                        problem=f"tool result of step {fact.step} in history does not match "
                        "the ledger's digest",
                    )
                )
    for kind in ("decision", "model.call", "tool.executed"):
        for e in by_kind.get(kind, []):
            if e.seq not in seen and e.rule != "ungoverned":
                problems.append(
                    Divergence(
                        event_id=None,
                        seq=e.seq,
                        problem=f"the ledger's {kind} (step {e.step}) has no counterpart "
                        "in history",
                    )
                )
    return problems


class TimelineEntry(BaseModel):
    step: int | None
    kind: str
    at: str
    since_start_ms: float
    duration_ms: float | None
    """Time until the step's next event: how long a wait or a call took."""
    summary: str


def timeline(events: Sequence[RecordedEvent]) -> list[TimelineEntry]:
    if not events:
        return []
    times = [datetime.fromisoformat(e.recorded_at) for e in events]
    start = times[0]
    entries: list[TimelineEntry] = []
    for i, e in enumerate(events):
        nxt = times[i + 1] if i + 1 < len(events) else None
        who = f" by {e.actor}" if e.actor else ""
        why = f" [{e.tier}: {e.rule}]" if e.tier else ""
        entries.append(
            TimelineEntry(
                step=e.step,
                kind=e.kind,
                at=e.recorded_at,
                since_start_ms=(times[i] - start).total_seconds() * 1000,
                duration_ms=(nxt - times[i]).total_seconds() * 1000 if nxt else None,
                summary=f"{e.action} {e.resource}".strip() + why + who + f" -> {e.outcome}",
            )
        )
    return entries
