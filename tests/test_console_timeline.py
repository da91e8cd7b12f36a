"""The run timeline and the overview's numbers, as pure functions: wall-clock ticks that
never repeat, idle gaps compressed and named, open waits drawn to now, a shape per
outcome, human durations, approval waits labelled by action, no latency for the script."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tether.console.metrics import overview
from tether.console.timeline import Scale, human, ticks, timeline_svg
from tether.verification.events import RecordedEvent

T0 = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)


def ev(seq: int, ms: float, kind: str, step: int | None = 1, **kw: object) -> RecordedEvent:
    fields: dict[str, object] = {
        "idempotency_key": f"k{seq}",
        "kind": kind,
        "workflow_id": "wf",
        "run_id": "run",
        "step": step,
        "agent": "agent:ap-clerk",
        "action": "payments.pay",
        "resource": "vendor/globex",
        "seq": seq,
        "recorded_at": (T0 + timedelta(milliseconds=ms)).isoformat(),
        "prev_hash": "",
        "hash": "",
        **kw,
    }
    return RecordedEvent.model_validate(fields)


def test_durations_read_as_people_say_them() -> None:
    assert human(340) == "340 ms"
    assert human(4200) == "4.2 s"
    assert human(125_000) == "2 min 5 s"
    assert human(3_780_000) == "1 h 3 min"
    assert human(2 * 86_400_000 + 3 * 3_600_000) == "2 d 3 h"


def _run(decided: str | None) -> list[RecordedEvent]:
    events = [
        ev(1, 0, "decision", outcome="needs-approval", tier="approve"),
        ev(2, 0.4, "model.call", outcome="succeeded", payload={"provider": "scripted"}),
        ev(3, 1.1, "approval.requested", outcome="pending", payload={"request_id": "apr-1"}),
    ]
    if decided:
        events.append(
            ev(
                4,
                2 * 3_600_000 + 5 * 60_000,
                "approval.decided",
                outcome=decided,
                actor="user:olga",
                payload={"request_id": "apr-1", "comment": "incident 42"},
            )
        )
    return events


def test_the_axis_is_wall_clock_with_labels_that_never_repeat() -> None:
    svg = str(timeline_svg(_run("approved"), T0, running=False))
    labels = re.findall(
        r'<text class="tick" x="[^"]*" y="[^"]*" text-anchor="middle">([^<]*)<', svg
    )
    assert labels and len(labels) == len(set(labels)), labels
    assert labels[0].startswith("09:00:00") and labels[-1].startswith("11:05:00")
    assert "0 ms" not in svg
    # Three events within 2 ms and a two-hour wait: the wait is compressed and named.
    assert 'data-gap="waiting 2 h 5 min"' in svg
    scale = Scale([0, 0.4, 1.1, 7_500_000])
    assert scale.x(1.1) - scale.x(0) >= 8  # short events stay apart


def test_an_idle_gap_is_compressed_and_called_idle() -> None:
    events = [ev(1, 0, "decision"), ev(2, 600_000, "tool.executed", outcome="succeeded")]
    assert 'data-gap="idle 10 min"' in str(timeline_svg(events, T0, running=False))


def test_each_outcome_has_its_own_shape() -> None:
    marks = {}
    for outcome in ("approved", "rejected", "halted", "expired"):
        svg = str(timeline_svg(_run(outcome), T0, running=False))
        found = re.search(rf'<(\w+) class="mark \w+" data-mark="{outcome}"', svg)
        assert found, outcome
        marks[outcome] = found.group(1)
        assert "incident 42" in svg and "user:olga" in svg
    assert marks["halted"] == "rect" and marks["approved"] == "circle"
    assert marks["rejected"] == "path"
    comp = [ev(1, 0, "compensation.executed", outcome="compensated")]
    assert 'data-mark="compensated"' in str(timeline_svg(comp, T0, running=False))


def test_an_open_wait_is_drawn_to_now() -> None:
    now = T0 + timedelta(minutes=2, seconds=5)
    svg = str(timeline_svg(_run(None), now, running=True))
    assert 'data-open="1"' in svg and "still waiting, 2 min 5 s" in svg
    assert '<text class="tick now"' in svg
    scale_end = re.findall(r'text-anchor="middle">([^<]*)<', svg)
    assert any(label.startswith("09:02:05") for label in scale_end)


def test_ticks_fall_back_to_milliseconds_rather_than_repeat() -> None:
    scale = Scale([0, 300, 700, 900])
    labels = [label for _, label in ticks(scale, T0, spacing=10)]
    assert labels == ["09:00:00.000", "09:00:00.300", "09:00:00.700", "09:00:00.900"]


def test_overview_labels_waits_by_action_and_has_no_latency_for_the_script() -> None:
    requested = ev(1, 0, "approval.requested", payload={"request_id": "apr-1"})
    decided = ev(2, 125_000, "approval.decided", outcome="halted", payload={"request_id": "apr-1"})
    call = ev(
        3,
        0,
        "model.call",
        payload={"provider": "scripted", "model": "script", "attempts": [{"latency_ms": 0}]},
    )
    data = overview(
        [], [requested, decided], [call], T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    )
    [(label, seconds)] = data.approval_waits
    assert "payments.pay" in label and "vendor/globex" in label and "apr-" not in label
    assert seconds == 125.0
    assert data.model_latency == [] and data.latency_unmeasured == ["script"]
    assert data.approval_outcomes == {"halted": 1}
