"""Latency distributions as a self-contained SVG (no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

COLOURS = ["#3b6ea8", "#d9822b", "#2e8b57", "#9b59b6"]


def histogram_svg(series: dict[str, list[float]], title: str, unit: str, path: Path) -> Path:
    """Overlaid histograms of each series, 30 bins over the shared range."""
    values = [v for vs in series.values() for v in vs]
    lo, hi = min(values), max(values)
    bins = 30
    width = (hi - lo) / bins or 1.0
    counts = {
        name: [
            sum(
                1
                for v in vs
                if lo + i * width <= v < lo + (i + 1) * width or (i == bins - 1 and v == hi)
            )
            for i in range(bins)
        ]
        for name, vs in series.items()
    }
    top = max(max(c) for c in counts.values()) or 1
    w, h, left, bottom = 720, 360, 60, 40
    plot_w, plot_h = w - left - 20, h - bottom - 50
    bar = plot_w / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{left}" y2="{h - bottom - plot_h}" stroke="black"/>',
        f'<text x="{left}" y="{h - 15}">{lo:.1f} {unit}</text>',
        f'<text x="{w - 20}" y="{h - 15}" text-anchor="end">{hi:.1f} {unit}</text>',
        f'<text x="{left - 5}" y="{h - bottom - plot_h + 4}" text-anchor="end">{top}</text>',
    ]
    for k, (name, cs) in enumerate(counts.items()):
        colour = COLOURS[k % len(COLOURS)]
        for i, c in enumerate(cs):
            bh = plot_h * c / top
            parts.append(
                f'<rect x="{left + i * bar + 1:.1f}" y="{h - bottom - bh:.1f}" width="{bar - 2:.1f}" '
                f'height="{bh:.1f}" fill="{colour}" fill-opacity="0.5"/>'
            )
        parts.append(
            f'<rect x="{w - 200}" y="{36 + 18 * k}" width="12" height="12" fill="{colour}"/>'
        )
        parts.append(f'<text x="{w - 182}" y="{46 + 18 * k}">{name} (n={len(series[name])})</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
