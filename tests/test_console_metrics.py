"""The overview's numbers and the SVG charts, over constructed ledger events (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tether.console.charts import bars, stacked_bars
from tether.console.details import argument_rows, five_answers, influences, spend
from tether.console.metrics import overview
from tether.console.timeline import timeline_svg
from tether.verification.events import RecordedEvent

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def event(seq: int, kind: str, minutes: float, **fields: Any) -> RecordedEvent:
    return RecordedEvent(
        idempotency_key=f"k{seq}",
        kind=kind,
        seq=seq,
        recorded_at=(START + timedelta(minutes=minutes)).isoformat(timespec="microseconds"),
        prev_hash="0" * 64,
        hash="1" * 64,
        **fields,
    )


def test_overview_counts_tiers_denials_waits_latency_and_cost() -> None:
    decisions = [
        event(1, "decision", 0, tier="auto", rule="small"),
        event(2, "decision", 1, tier="deny", rule="no-bank"),
        event(3, "decision", 70, tier="deny", rule="no-bank"),
        event(4, "decision", 75, tier="approve", rule="large"),
        event(5, "decision", 60 * 24 * 5, tier="auto", rule="outside the period"),
    ]
    approvals = [
        event(6, "approval.requested", 75, payload={"request_id": "apr-1"}),
        event(7, "approval.decided", 77.5, payload={"request_id": "apr-1"}),
        event(8, "approval.requested", 80, payload={"request_id": "apr-2"}),  # still open
    ]
    calls = [
        event(9, "model.call", 2, payload={"model": "m1", "latency_ms": 100.0, "cost_usd": 0.5}),
        event(10, "model.call", 3, payload={"model": "m1", "latency_ms": 300, "cost_usd": 0.25}),
        event(
            11,
            "model.call",
            4,
            payload={
                "model": "m2",
                "attempts": [{"latency_ms": 40.0}, {"latency_ms": 15.5}],  # a failover
                "cost_usd": 0.0,
            },
        ),
        event(12, "model.call", 5, payload={"model": "m3"}),  # no latency recorded
    ]
    data = overview(decisions, approvals, calls, START, START + timedelta(hours=2))
    assert data.buckets == ["11-25 09:00", "11-25 10:00", "11-25 11:00"]
    assert data.by_tier["auto"] == [1, 0, 0]
    assert data.by_tier["deny"] == [1, 1, 0]
    assert data.by_tier["approve"] == [0, 1, 0]
    assert data.denials == [("no-bank", 2)]
    assert data.approval_waits == [("apr-1", 150.0)]
    assert data.model_latency == [("m1", 200.0), ("m2", 55.5)]
    assert data.model_cost == [("m1", 0.75), ("m2", 0.0)]  # m3 recorded no cost
    daily = overview(decisions, [], [], START, START + timedelta(days=7))
    assert daily.buckets[0] == "2026-11-25" and len(daily.buckets) == 8
    assert sum(daily.by_tier["auto"]) == 2


def test_charts_escape_every_label() -> None:
    hostile = "<script>alert(1)</script>"
    for svg in (
        bars([hostile], [3.0], "t"),
        stacked_bars([hostile], {"deny": [1.0]}, hostile),
        timeline_svg([event(1, "decision", 0, action=hostile, step=1)], START, running=False),
    ):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "nothing recorded" in bars([], [], "denials")


def test_timeline_draws_a_lane_per_step_and_a_bar_per_event() -> None:
    events = [
        event(1, "model.call", 0, step=1),
        event(2, "decision", 0.01, step=2),
        event(3, "approval.requested", 0.02, step=2),
        event(4, "approval.decided", 1.02, step=2),
        event(5, "tool.executed", 1.03, step=2),
    ]
    svg = timeline_svg(events, START, running=False)
    assert svg.count('class="ev ') == 5  # approval.decided has no outcome: a tick
    assert 'class="span approval"' in svg and 'class="ev model"' in svg
    assert ">step 1<" in svg and ">step 2<" in svg
    assert "approval.requested" in svg and "waited 1 min" in svg  # the wait's duration


def test_request_details_from_events() -> None:
    assert argument_rows('{"vendor": "acme", "amount": 5, "lines": [1, 2]}') == [
        ("vendor", "acme"),
        ("amount", "5"),
        ("lines", "[1, 2]"),
    ]
    assert argument_rows('{"vendor": "ac') is None  # a summary cut at 500 characters
    events = [
        event(
            1,
            "model.call",
            0,
            step=1,
            payload={
                "call_id": "mc-1",
                "model": "m",
                "cost_usd": 1.5,
                "input_tokens": 10,
                "output_tokens": 5,
            },
        ),
        event(
            2,
            "decision",
            1,
            step=3,
            tier="approve",
            rule="large",
            policy_version="sha256:abc",
            payload={
                "inputs": ["mc-1", "step:2:sha256:ffff", "other"],
                "context": {"amount": 20000},
                "args_digest": "sha256:" + "a" * 64,
            },
        ),
    ]
    found = influences(events, 3)
    assert [i.kind for i in found] == ["model call", "tool result", "input", "policy context"]
    assert "amount = 20000" in found[-1].detail
    assert influences(events, 9) == []
    assert spend(events).model_dump() == {"model_calls": 1, "tokens": 15, "cost_usd": 1.5}
    answers = five_answers(events[1])
    assert answers["why"].startswith("approve under rule large (policy sha256:abc)")
    assert "mc-1" in answers["data"] and "args sha256:aaaa" in answers["data"]
