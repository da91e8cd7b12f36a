"""Server-rendered inline SVG: a run's timeline and the overview's bar charts.

No JavaScript: each function returns SVG markup with every label escaped, and a `<title>`
on each mark so a browser shows the details on hover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from tether.verification.events import RecordedEvent
from tether.verification.forensics import TimelineEntry


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


def timeline_svg(events: Sequence[RecordedEvent], entries: Sequence[TimelineEntry]) -> Markup:
    """One lane per step; each event a bar lasting until the run's next event."""
    if not events:
        return Markup("")
    steps = sorted({e.step if e.step is not None else -1 for e in events})
    lane = {s: i for i, s in enumerate(steps)}
    total = max((t.since_start_ms + (t.duration_ms or 0.0)) for t in entries) or 1.0
    left, width, row = 90, 800, 26
    height = row * len(steps) + 40
    scale = width / total
    parts = [
        f'<svg class="timeline" role="img" viewBox="0 0 {left + width + 40} {height}" '
        f'width="100%" aria-label="timeline of {len(events)} events">'
    ]
    for s, i in lane.items():
        y = 10 + i * row
        label = f"step {s}" if s >= 0 else "run"
        parts.append(f'<text class="lane" x="4" y="{y + 16}">{escape(label)}</text>')
    for e, t in zip(events, entries, strict=True):
        y = 10 + lane[e.step if e.step is not None else -1] * row
        x = left + t.since_start_ms * scale
        w = max((t.duration_ms or 0.0) * scale, 3.0)
        took = f", {t.duration_ms:.0f} ms" if t.duration_ms is not None else ""
        tip = f"#{e.seq} {e.kind} {e.action} {e.resource} -> {e.outcome}{took}"
        parts.append(
            f'<rect class="ev {category(e.kind)}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
            f'height="{row - 8}" data-kind="{escape(e.kind)}"><title>{escape(tip)}</title></rect>'
        )
        if w > 110 and t.duration_ms is not None:  # room to say what the bar is
            parts.append(
                f'<text class="barlabel" x="{x + 4:.1f}" y="{y + 16}">'
                f"{escape(e.kind)} {escape(_duration(t.duration_ms))}</text>"
            )
    axis_y = height - 14
    parts.append(
        f'<line class="axis" x1="{left}" y1="{axis_y - 8}" x2="{left + width}" y2="{axis_y - 8}"/>'
    )
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        ms = total * frac
        parts.append(
            f'<text class="tick" x="{left + width * frac:.1f}" y="{axis_y + 6}" '
            f'text-anchor="{"end" if frac == 1.0 else "start"}">'
            f"{escape(_duration(ms))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _duration(ms: float) -> str:
    if ms >= 120_000:
        return f"{ms / 60_000:.1f} min"
    if ms >= 2_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms"


def stacked_bars(
    buckets: Sequence[str], series: Mapping[str, Sequence[float]], title: str, unit: str = ""
) -> Markup:
    """Stacked bars, one per bucket; `series` maps a class name (e.g. a tier) to values."""
    if not buckets:
        return Markup(f'<p class="empty">{escape(title)}: nothing recorded in this period.</p>')
    totals = [sum(values[i] for values in series.values()) for i in range(len(buckets))]
    top = max(totals) or 1.0
    left, width, height = 50, 760, 200
    bar = width / len(buckets)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {left + width + 10} {height + 60}" '
        f'width="100%" aria-label="{escape(title)}">',
        f'<text class="tick" x="4" y="16">{escape(_number(top))}{escape(unit)}</text>',
        f'<line class="axis" x1="{left}" y1="{height + 10}" x2="{left + width}" '
        f'y2="{height + 10}"/>',
    ]
    for i, name in enumerate(buckets):
        y = height + 10.0
        for cls, values in series.items():
            h = values[i] / top * height
            if h <= 0:
                continue
            y -= h
            tip = f"{name}: {_number(values[i])}{unit} {cls}"
            parts.append(
                f'<rect class="bar {escape(cls)}" x="{left + i * bar + 1:.1f}" y="{y:.1f}" '
                f'width="{max(bar - 2, 1):.1f}" height="{h:.1f}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if len(buckets) <= 8 or i % -(-len(buckets) // 8) == 0:
            parts.append(
                f'<text class="tick" x="{left + i * bar:.1f}" y="{height + 26}">'
                f"{escape(name)}</text>"
            )
    legend_x = left
    for cls in series:
        parts.append(
            f'<rect class="bar {escape(cls)}" x="{legend_x}" y="{height + 38}" '
            'width="10" height="10"/>'
            f'<text class="tick" x="{legend_x + 14}" y="{height + 47}">{escape(cls)}</text>'
        )
        legend_x += 24 + 8 * len(cls)
    parts.append("</svg>")
    return Markup("".join(parts))


def _number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.4g}"


def bars(labels: Sequence[str], values: Sequence[float], title: str, unit: str = "") -> Markup:
    """Horizontal bars, one per label."""
    if not labels:
        return Markup(f'<p class="empty">{escape(title)}: nothing recorded in this period.</p>')
    top = max(values) or 1.0
    left, width, row = 220, 560, 22
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {left + width + 90} {row * len(labels) + 10}" '
        f'width="100%" aria-label="{escape(title)}">'
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        w = max(value / top * width, 1.0)
        parts.append(
            f'<text class="lane" x="4" y="{y + 14}">{escape(label[:34])}</text>'
            f'<rect class="bar value" x="{left}" y="{y}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {escape(_number(value))}{escape(unit)}</title></rect>"
            f'<text class="tick" x="{left + w + 4:.1f}" y="{y + 13}">'
            f"{escape(_number(value))}{escape(unit)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
