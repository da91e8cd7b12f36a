"""The overview's numbers, computed from ledger events. Pure functions.

Decisions by tier per time bucket, denials by rule, approval waits (requested → decided),
approval outcomes (approved, rejected, halted by a kill switch, expired), model latency
and cost by model. A `model.call`'s latency is its `latency_ms`, or the sum of its
gateway attempts' (failovers included); the scripted provider makes no network call, so
its calls have none (`latency_unmeasured`), rather than a made-up 0 ms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel

from tether.console.timeline import latency_ms
from tether.verification.events import RecordedEvent

TIERS = ("auto", "notify", "approve", "deny")


class Overview(BaseModel):
    buckets: list[str]
    by_tier: dict[str, list[float]]
    denials: list[tuple[str, float]]
    approval_waits: list[tuple[str, float]]
    """(what was asked — action on resource, run —, seconds waited) of decided requests."""
    approval_outcomes: dict[str, int] = {}
    """Decided requests by outcome; `halted` (a kill switch) is its own, never `rejected`."""
    model_latency: list[tuple[str, float]]
    """(model, mean ms) of the calls whose latency was measured."""
    latency_unmeasured: list[str] = []
    """Models none of whose calls has a measured latency (the scripted provider)."""
    model_cost: list[tuple[str, float]]
    """(model, USD)."""
    decisions: int
    model_calls: int


def _bucket(moment: datetime, hourly: bool) -> str:
    return moment.strftime("%m-%d %H:00" if hourly else "%Y-%m-%d")


def overview(
    decisions: Sequence[RecordedEvent],
    approvals: Sequence[RecordedEvent],
    model_calls: Sequence[RecordedEvent],
    since: datetime,
    until: datetime,
) -> Overview:
    hourly = until - since <= timedelta(days=2)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    buckets: list[str] = []
    moment = since
    while moment < until:
        name = _bucket(moment, hourly)
        if name not in buckets:
            buckets.append(name)
        moment += step
    last = _bucket(until, hourly)
    if last not in buckets:
        buckets.append(last)
    index = {b: i for i, b in enumerate(buckets)}
    by_tier = {t: [0.0] * len(buckets) for t in TIERS}
    denials: dict[str, float] = defaultdict(float)
    for e in decisions:
        tier = e.tier if e.tier in by_tier else "deny"
        at = index.get(_bucket(datetime.fromisoformat(e.recorded_at), hourly))
        if at is not None:
            by_tier[tier][at] += 1
        if e.tier == "deny":
            denials[e.rule] += 1
    requested: dict[str, datetime] = {}
    waits: list[tuple[str, float]] = []
    outcomes: dict[str, int] = defaultdict(int)
    for e in approvals:
        rid = str(e.payload.get("request_id", ""))
        if e.kind == "approval.requested":
            requested[rid] = datetime.fromisoformat(e.recorded_at)
        elif e.kind == "approval.decided":
            outcomes[e.outcome] += 1
            if rid in requested:
                waited = (datetime.fromisoformat(e.recorded_at) - requested[rid]).total_seconds()
                waits.append((_asked(e), waited))
    latency: dict[str, list[float]] = defaultdict(list)
    unmeasured: set[str] = set()
    cost: dict[str, float] = defaultdict(float)
    for e in model_calls:
        model = str(e.payload.get("model", "?"))
        ms = latency_ms(e)
        if ms is not None:
            latency[model].append(ms)
        else:
            unmeasured.add(model)
        usd = e.payload.get("cost_usd")
        if isinstance(usd, int | float) and not isinstance(usd, bool):
            cost[model] += float(usd)
    return Overview(
        buckets=buckets,
        by_tier=by_tier,
        denials=sorted(denials.items(), key=lambda kv: -kv[1]),
        approval_waits=waits[-30:],
        approval_outcomes=dict(sorted(outcomes.items())),
        model_latency=sorted((m, sum(v) / len(v)) for m, v in latency.items()),
        latency_unmeasured=sorted(unmeasured - set(latency)),
        model_cost=sorted(cost.items()),
        decisions=len(decisions),
        model_calls=len(model_calls),
    )


def _asked(e: RecordedEvent) -> str:
    """What a request asked, as a person reads it: 'payments.pay vendor/globex · run'."""
    asked = f"{e.action} {e.resource}".strip()
    if not asked:  # an event with neither names its request only
        return str(e.payload.get("request_id", "?"))
    run = e.workflow_id or ""
    return asked + (f" · {run[-12:]}" if run else "")
