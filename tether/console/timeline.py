"""A run's timeline as inline SVG, drawn on the server. Pure functions.

- One lane per step. Approval waits are bars from `approval.requested` to its
  `approval.decided`; a wait still open is drawn to *now* (dashed, "still waiting").
  A model call is a bar of its measured latency (none for the scripted provider, which
  makes no network call); every other event is a thin tick.
- Outcomes get shapes as well as colours: approved (circle), rejected (cross), halted by a
  kill switch (square), compensated (diamond), expired (hollow circle), denied (triangle).
- The axis is wall-clock (UTC) and piecewise linear: a stretch of at least `GAP_MS` that
  takes a large share of the run is compressed to a fixed width and labelled as a break
  ("idle 2 h 5 min", or "waiting …" when a wait spans it), and every distinct moment keeps
  a minimum width, so short events stay visible beside a day-long wait. Tick labels are
  chosen so that no two are the same.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from markupsafe import Markup, escape

from tether.verification.events import RecordedEvent

GAP_MS = 2000.0
BREAK_PX = 54.0
MIN_PX = 8.0
LEFT, WIDTH, ROW = 170, 760, 28

# Presentation attributes (not `style`, which the console's CSP forbids): the drawing
# reads without the stylesheet, and the stylesheet may override any of them.
FILLS = {
    "approved": 'fill="#1f7a4a"',
    "rejected": 'fill="none" stroke="#b3261e"',
    "halted": 'fill="#1d1d1f"',
    "compensated": 'fill="#7a3fb0"',
    "expired": 'fill="none" stroke="#5f6675" stroke-width="2"',
    "denied": 'fill="#c8453c"',
}
SPAN_FILLS = {"approval": "#e0a526", "model": "#8e5cc4"}

MARKS = {
    "approved": "approved",
    "rejected": "rejected by a person",
    "halted": "halted by a kill switch",
    "compensated": "compensated (undone)",
    "expired": "expired",
    "denied": "denied by policy",
}


def human(ms: float) -> str:
    """A duration as people say it: '340 ms', '4.2 s', '2 min 5 s', '1 h 3 min', '2 d 3 h'."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def category(kind: str) -> str:
    """The lane colour class of an event kind."""
    if kind == "decision":
        return "decision"
    if kind.startswith("approval.") or kind == "agent.paused":
        return "approval"
    if kind.startswith("model."):
        return "model"
    if kind.startswith(("tool.", "compensation.")):
        return "tool"
    if kind.startswith(("notify", "review.")):
        return "notify"
    return "other"


def mark_of(e: RecordedEvent) -> str | None:
    """The outcome shape an event gets, if any."""
    if e.kind == "approval.decided" and e.outcome in MARKS:
        return e.outcome
    if e.kind == "compensation.executed":
        return "compensated"
    if e.kind == "decision" and e.outcome == "denied":
        return "denied"
    return None


def latency_ms(call: RecordedEvent) -> float | None:
    """A model call's measured latency; None when nothing was measured (scripted provider)."""
    p = call.payload
    if p.get("provider") == "scripted":
        return None
    ms = p.get("latency_ms")
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        return float(ms)
    attempts = p.get("attempts")
    if not isinstance(attempts, list) or not attempts:
        return None
    total = 0.0
    for attempt in attempts:
        value = attempt.get("latency_ms") if isinstance(attempt, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        total += float(value)
    return total


@dataclass(frozen=True)
class Span:
    lane: int
    start: float
    end: float
    cls: str
    tip: str
    open: bool = False


@dataclass(frozen=True)
class Point:
    lane: int
    at: float
    cls: str
    mark: str | None
    tip: str
    kind: str


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    x0: float
    x1: float
    compressed: bool


class Scale:
    """Piecewise-linear time → x over the run's distinct moments."""

    def __init__(self, moments: Sequence[float], width: float = WIDTH) -> None:
        ts = sorted(set(moments))
        if len(ts) == 1:
            ts = [ts[0], ts[0] + 1.0]
        total = ts[-1] - ts[0]
        gaps = list(pairwise(ts))
        squeeze = [b - a >= GAP_MS and b - a >= 0.15 * total for a, b in gaps]
        kept = [b - a for (a, b), s in zip(gaps, squeeze, strict=True) if not s]
        free = width - BREAK_PX * sum(squeeze)
        floor = min(MIN_PX, free / (2 * max(len(kept), 1)))
        linear = (free - floor * len(kept)) / (sum(kept) or 1.0)
        self.segments: list[Segment] = []
        x = 0.0
        for (a, b), s in zip(gaps, squeeze, strict=True):
            w = BREAK_PX if s else floor + (b - a) * linear
            self.segments.append(Segment(a, b, x, x + w, s))
            x += w
        self._starts = [s.start for s in self.segments]
        self.first, self.last = ts[0], ts[-1]

    def x(self, t: float) -> float:
        i = max(bisect_right(self._starts, t) - 1, 0)
        seg = self.segments[min(i, len(self.segments) - 1)]
        t = min(max(t, seg.start), seg.end)
        frac = (t - seg.start) / ((seg.end - seg.start) or 1.0)
        return LEFT + seg.x0 + frac * (seg.x1 - seg.x0)


def _clock(moment: datetime, precise: bool, dated: bool) -> str:
    text = moment.strftime("%H:%M:%S")
    if precise:
        text += f".{moment.microsecond // 1000:03d}"
    return (moment.strftime("%m-%d ") + text) if dated else text


def ticks(scale: Scale, start: datetime, spacing: float = 86.0) -> list[tuple[float, str]]:
    """Axis ticks at the run's moments, far enough apart, with labels that never repeat."""
    moments = [scale.first] + [s.end for s in scale.segments]
    chosen: list[float] = []
    for t in moments:
        if not chosen or scale.x(t) - scale.x(chosen[-1]) >= spacing:
            chosen.append(t)
    if chosen[-1] != moments[-1]:  # the end (now, for a running run) always has its label
        while len(chosen) > 1 and scale.x(moments[-1]) - scale.x(chosen[-1]) < spacing:
            chosen.pop()
        chosen.append(moments[-1])
    at = [start + timedelta(milliseconds=t) for t in chosen]
    dated = at[0].date() != at[-1].date()
    labels = [_clock(m, False, dated) for m in at]
    if len(set(labels)) < len(labels):
        labels = [_clock(m, True, dated) for m in at]
    out: list[tuple[float, str]] = []
    for t, label in zip(chosen, labels, strict=True):
        if out and label == out[-1][1]:
            continue
        out.append((scale.x(t), label))
    return out


def _shape(mark: str, x: float, y: float, tip: str) -> str:
    title = f"<title>{escape(tip)}</title>"
    cls = f'class="mark {mark}" data-mark="{mark}" {FILLS[mark]}'
    if mark == "approved":
        return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="6">{title}</circle>'
    if mark == "expired":
        return f'<circle {cls} cx="{x:.1f}" cy="{y:.1f}" r="6">{title}</circle>'
    if mark == "halted":
        return f'<rect {cls} x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12">{title}</rect>'
    if mark == "compensated":
        d = f"M{x:.1f} {y - 7:.1f}L{x + 7:.1f} {y:.1f}L{x:.1f} {y + 7:.1f}L{x - 7:.1f} {y:.1f}Z"
        return f'<path {cls} d="{d}">{title}</path>'
    if mark == "denied":
        d = f"M{x:.1f} {y - 7:.1f}L{x + 7:.1f} {y + 6:.1f}L{x - 7:.1f} {y + 6:.1f}Z"
        return f'<path {cls} d="{d}">{title}</path>'
    d = (
        f"M{x - 6:.1f} {y - 6:.1f}L{x + 6:.1f} {y + 6:.1f}"
        f"M{x + 6:.1f} {y - 6:.1f}L{x - 6:.1f} {y + 6:.1f}"
    )
    return f'<path {cls} d="{d}" stroke-width="3">{title}</path>'


def layout(
    events: Sequence[RecordedEvent], now: datetime, running: bool
) -> tuple[list[str], list[Span], list[Point], datetime]:
    """Lanes, spans and points of a run, in ms since its first event."""
    start = datetime.fromisoformat(events[0].recorded_at)

    def ms(e: RecordedEvent) -> float:
        return (datetime.fromisoformat(e.recorded_at) - start).total_seconds() * 1000

    steps = sorted({e.step if e.step is not None else -1 for e in events})
    lane = {s: i for i, s in enumerate(steps)}
    names = []
    for s in steps:
        action = next((e.action for e in events if e.step == s and e.action), "")
        names.append(f"step {s} {action}".strip() if s >= 0 else "run")
    spans: list[Span] = []
    points: list[Point] = []
    end_of_run = ms(events[-1])
    for e in events:
        i, t = lane[e.step if e.step is not None else -1], ms(e)
        what = f"#{e.seq} {e.kind} {e.action} {e.resource}".strip()
        who = f" by {e.actor}" if e.actor else ""
        comment = str(e.payload.get("comment") or e.payload.get("reason") or "")
        tip = f"{what} → {e.outcome}{who}" + (f": {comment}" if comment else "")
        if e.kind == "approval.requested":
            rid = e.payload.get("request_id")
            closed = next(
                (
                    d
                    for d in events
                    if d.kind == "approval.decided"
                    and d.seq > e.seq
                    and d.payload.get("request_id") == rid
                ),
                None,
            )
            if closed is not None:
                took = ms(closed) - t
                span = Span(i, t, ms(closed), "approval", f"{what}: waited {human(took)}")
            elif running:
                took = (now - start).total_seconds() * 1000 - t
                span = Span(
                    i, t, t + took, "approval", f"{what}: still waiting, {human(took)}", True
                )
            else:
                span = Span(i, t, end_of_run, "approval", f"{what}: never decided")
            spans.append(span)
        elif e.kind == "model.call":
            took_ms = latency_ms(e)
            if took_ms:
                spans.append(Span(i, t - took_ms, t, "model", f"{tip}, took {human(took_ms)}"))
        points.append(Point(i, t, category(e.kind), mark_of(e), tip, e.kind))
    return names, spans, points, start


def timeline_svg(events: Sequence[RecordedEvent], now: datetime, running: bool) -> Markup:
    """The run's timeline; `now` and `running` draw open waits to the present."""
    if not events:
        return Markup("")
    names, spans, points, start = layout(events, now, running)
    moments = [p.at for p in points] + [s.start for s in spans] + [s.end for s in spans]
    scale = Scale(moments)
    height = ROW * len(names) + 96
    axis_y = ROW * len(names) + 16
    parts = [
        f'<svg class="timeline" role="img" viewBox="0 0 {LEFT + WIDTH + 20} {height}" '
        f'width="100%" aria-labelledby="timeline-title">'
        f'<title id="timeline-title">Timeline of {len(events)} events over '
        f"{escape(human(scale.last - scale.first))} (times UTC)</title>"
    ]
    for i, name in enumerate(names):
        y = 10 + i * ROW
        parts.append(f'<text class="lane" x="4" y="{y + 16}">{escape(name[:26])}</text>')
    for seg in scale.segments:
        if not seg.compressed:
            continue
        x0, x1 = LEFT + seg.x0, LEFT + seg.x1
        waiting = any(s.start <= seg.start and s.end >= seg.end for s in spans)
        what = "waiting" if waiting else "idle"
        label = f"{what} {human(seg.end - seg.start)}"
        parts.append(
            f'<g class="gap {what}" data-gap="{escape(label)}">'
            f'<rect class="gap" x="{x0 + 2:.1f}" y="6" width="{x1 - x0 - 4:.1f}" '
            f'height="{axis_y - 10}" fill="#eef0f4" stroke="#9aa3b2" '
            f'stroke-dasharray="4 3"><title>{escape(label)}, compressed</title></rect>'
            f'<text class="gaplabel" x="{(x0 + x1) / 2:.1f}" y="{axis_y + 30}" '
            f'text-anchor="middle">{escape(label)}</text></g>'
        )
    for s in spans:
        y = 10 + s.lane * ROW
        x0, x1 = scale.x(s.start), scale.x(s.end)
        flag = ' data-open="1" stroke="#8a5a00" stroke-dasharray="5 3"' if s.open else ""
        flag += f' fill="{SPAN_FILLS.get(s.cls, "#9aa3b2")}" fill-opacity="0.55"'
        parts.append(
            f'<rect class="span {s.cls}{" open" if s.open else ""}"{flag} x="{x0:.1f}" '
            f'y="{y + 4}" width="{max(x1 - x0, 3.0):.1f}" height="{ROW - 10}">'
            f"<title>{escape(s.tip)}</title></rect>"
        )
    for p in points:
        y = 10 + p.lane * ROW
        x = scale.x(p.at)
        if p.mark is not None:
            parts.append(_shape(p.mark, x, y + ROW / 2 - 1, p.tip))
        else:
            parts.append(
                f'<rect class="ev {p.cls}" x="{x - 1.5:.1f}" y="{y + 2}" width="3" '
                f'height="{ROW - 6}" data-kind="{escape(p.kind)}">'
                f"<title>{escape(p.tip)}</title></rect>"
            )
    if running and any(s.open for s in spans):
        x = scale.x(scale.last)
        parts.append(
            f'<line class="now" x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{axis_y}" '
            'stroke="#b3261e" stroke-dasharray="3 3"/>'
            f'<text class="tick now" x="{x - 4:.1f}" y="12" text-anchor="end">now</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{axis_y}" x2="{LEFT + WIDTH}" y2="{axis_y}"/>'
    )
    for x, label in ticks(scale, start):
        parts.append(
            f'<line class="axis" x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(f'<text class="tick" x="4" y="{axis_y + 16}">UTC</text>')
    lx = LEFT
    for mark, words in MARKS.items():
        parts.append(_shape(mark, lx + 7, height - 12, words))
        parts.append(f'<text class="tick" x="{lx + 18}" y="{height - 8}">{escape(words)}</text>')
        lx += 26 + 6 * len(words)
    parts.append("</svg>")
    return Markup("".join(parts))
