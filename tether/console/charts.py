"""Server-rendered inline SVG: the overview's bar charts (a run's timeline is
`tether.console.timeline`).

No JavaScript: each function returns SVG markup with every label escaped, and a `<title>`
on each mark so a browser shows the details on hover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup, escape


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


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    unit: str = "",
    fmt: Callable[[float], str] | None = None,
) -> Markup:
    """Horizontal bars, one per label; `fmt` writes a value (else the number and `unit`)."""
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
        said = fmt(value) if fmt is not None else f"{_number(value)}{unit}"
        parts.append(
            f'<text class="lane" x="4" y="{y + 14}">{escape(label[:34])}</text>'
            f'<rect class="bar value" x="{left}" y="{y}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {escape(said)}</title></rect>"
            f'<text class="tick" x="{left + w + 4:.1f}" y="{y + 13}">{escape(said)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
