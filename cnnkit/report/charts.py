"""Small inline SVG charts for the report: no plotting library, no external asset, a few KB each.

Every function returns SVG markup as a ``str``; labels are XML-escaped here, so the template can
insert the markup as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

BAR = "#3b82f6"
PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#0082c8",
    "#f58230",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#d2f53c",
    "#fabebe",
    "#008080",
    "#dcbeff",
]  # cnnkit.io.draw.PALETTE, as CSS colours


def bars(counts: Sequence[tuple[str, int]], *, width: int = 420, row: int = 18, limit: int = 40) -> str:
    """Horizontal bars, one per ``(label, count)``, longest first as given; at most ``limit`` rows."""
    rows = list(counts)[:limit]
    if not rows:
        return '<p class="muted">none</p>'
    top = max(c for _, c in rows) or 1
    label_w, num_w = 130, 50
    span = width - label_w - num_w
    h = row * len(rows) + 4
    parts = [f'<svg class="chart" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img">']
    for i, (label, count) in enumerate(rows):
        y = i * row + 2
        w = max(1.0, span * count / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + row * 0.7:.1f}" text-anchor="end">{escape(_short(label))}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{BAR}">'
            f"<title>{escape(label)}: {count}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + row * 0.7:.1f}">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    values: Sequence[float], *, bins: int = 20, lo: float = 0.0, hi: float = 1.0, width: int = 420, height: int = 150
) -> str:
    """Counts of ``values`` in ``bins`` equal bins over ``[lo, hi]``, with the axis ends labelled."""
    values = [v for v in values if math.isfinite(v)]  # a NaN score (a broken model's) has no bin
    if not values:
        return '<p class="muted">no scores</p>'
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    top = max(counts) or 1
    pad, base = 28, height - 18
    bw = (width - pad - 4) / bins
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f'<line x1="{pad}" y1="{base}" x2="{width - 4}" y2="{base}" stroke="#888"/>',
        f'<text x="{pad - 4}" y="12" text-anchor="end">{top}</text>',
    ]
    for i, c in enumerate(counts):
        h = (base - 16) * c / top
        a, b = lo + (hi - lo) * i / bins, lo + (hi - lo) * (i + 1) / bins
        parts.append(
            f'<rect x="{pad + i * bw + 1:.1f}" y="{base - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR}"><title>{a:.2f}–{b:.2f}: {c}</title></rect>'
        )
    parts.append(
        f'<text x="{pad}" y="{height - 4}">{lo:g}</text>'
        f'<text x="{width - 4}" y="{height - 4}" text-anchor="end">{hi:g}</text>'
        f'<text x="{(width + pad) / 2}" y="{height - 4}" text-anchor="middle">score</text></svg>'
    )
    return "".join(parts)


def pr_curves(curves: Sequence[dict[str, object]], *, size: int = 300) -> str:
    """Precision (y) against recall (x), one polyline per ``{label, recall, precision, ap}``."""
    if not curves:
        return '<p class="muted">no curves</p>'
    pad = 30
    span = size - pad - 8
    parts = [
        f'<svg class="chart" viewBox="0 0 {size + 170} {size}" width="{size + 170}" height="{size}" role="img">',
        f'<rect x="{pad}" y="8" width="{span}" height="{span}" fill="none" stroke="#888"/>',
        f'<text x="{pad + span / 2}" y="{size - 4}" text-anchor="middle">recall</text>',
        f'<text x="10" y="{8 + span / 2}" transform="rotate(-90 10 {8 + span / 2})" text-anchor="middle">precision</text>',
    ]
    for i, c in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        rec = list(c["recall"])  # type: ignore[call-overload]
        prec = list(c["precision"])  # type: ignore[call-overload]
        pts = " ".join(f"{pad + span * r:.1f},{8 + span * (1 - p):.1f}" for r, p in zip(rec, prec, strict=True))
        label = f"{c['label']} AP50 {float(c['ap']):.3f}"  # type: ignore[arg-type]
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6">'
            f"<title>{escape(label)}</title></polyline>"
        )
        if i < 16:
            parts.append(
                f'<rect x="{size + 4}" y="{10 + i * 16}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{size + 18}" y="{19 + i * 16}">{escape(_short(label, 26))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
