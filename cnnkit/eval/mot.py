"""Multi-object tracking: MOT Challenge text files, scoring with ``motmetrics``, and counting across a line or
in and out of a region.

MOT text rows are ``frame,id,x,y,w,h,conf,class,visibility`` with frames from 1 (ground truth) or
``frame,id,x,y,w,h,conf,-1,-1,-1`` (results). Scoring follows the MOT Challenge protocol for
hard ground truth: a shape less visible than ``min_visibility`` is neither a miss when no track
covers it nor a false positive when one does (a result box matched to it, IoU ≥ 0.5, in one matching of
all ground truth as TrackEval does, is dropped with it), so an occluded shape that the detector cannot see
costs nothing, and one it does see is not punished either. Ground truth rows with ``conf`` 0 are skipped.

The counting rule (:func:`crosses`, :func:`count_crossings`) is shared by the ground truth of
``cnnkit data shapes --video`` and the tracker's ``count_line``, so both count the same way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import CnnkitError, OptionError, printable, reason_of

Line = tuple[float, float, float, float]


# -- counting across a line ---------------------------------------------------------------------


def parse_line(value: str | Sequence[float]) -> Line:
    """``"x1,y1,x2,y2"`` (pixels) or four numbers → a line segment; two equal ends are refused."""

    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise OptionError("count_line", "expected four numbers x1,y1,x2,y2", value) from None
    if len(parts) != 4 or not all(math.isfinite(v) for v in parts):
        raise OptionError("count_line", "expected four finite numbers x1,y1,x2,y2", value)
    if parts[:2] == parts[2:]:
        raise OptionError("count_line", "the two ends are the same point", value)
    return parts[0], parts[1], parts[2], parts[3]


def side(line: Sequence[float], point: tuple[float, float]) -> float:
    """Which side of the line ``x1, y1, x2, y2`` a point is on: the sign of the cross product."""
    x1, y1, x2, y2 = line
    return (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1)


def crosses(line: Sequence[float], a: tuple[float, float], b: tuple[float, float]) -> int:
    """+1 when the step ``a → b`` crosses the segment from ``side`` < 0 to > 0 ("in"), -1 the other way
    ("out"), 0 when it does not cross the segment itself."""
    sa, sb = side(line, a), side(line, b)
    if sa == 0 or (sa > 0) == (sb > 0) or sb == 0:
        return 0
    x1, y1, x2, y2 = line
    step = (a[0], a[1], b[0], b[1])
    ta, tb = side(step, (x1, y1)), side(step, (x2, y2))
    if ta != 0 and tb != 0 and (ta > 0) == (tb > 0):
        return 0  # the step crosses the line's extension, not the segment
    return 1 if sb > 0 else -1


def line_in_view(line: Sequence[float], width: int, height: int) -> bool:
    """Whether any part of the segment lies inside a ``width`` × ``height`` frame (a line drawn for another
    video size, or in the wrong order of numbers, often lies wholly outside)."""
    x1, y1, x2, y2 = line
    lo, hi = 0.0, 1.0  # the part of the segment inside the frame, clipped (Liang-Barsky), as fractions of it
    for p, q in ((x1 - x2, x1), (x2 - x1, width - x1), (y1 - y2, y1), (y2 - y1, height - y1)):
        if p == 0:
            if q < 0:
                return False  # parallel to this edge and outside it
            continue
        t = q / p
        if p < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
    return lo <= hi


def box_centre(box: Sequence[float]) -> tuple[float, float]:
    """The centre of an ``x1, y1, x2, y2`` box."""
    return (float(box[0]) + float(box[2])) / 2, (float(box[1]) + float(box[3])) / 2


def count_crossings(tracks: dict[Any, list[tuple[int, tuple[float, float]]]], line: Sequence[float]) -> dict[str, int]:
    """``{"in": n, "out": m}`` for ``{track: [(frame, centre), …]}``: each track counted once, at its first
    crossing (:class:`LineCounter`)."""
    counter = LineCounter(line)
    for track, points in tracks.items():
        for _, centre in sorted(points):
            counter.update(track, centre)
    return counter.counts


class LineCounter:
    """Counts tracks across a line, each once, at its first crossing between sightings.

    A centre exactly on the line is not a side: the step is measured from the last sighting off the
    line, so a track that stops on the line and goes on is counted once, and one that touches it and
    turns back is not counted.
    """

    def __init__(self, line: Sequence[float]) -> None:
        self.line = tuple(float(v) for v in line)
        self.last: dict[Any, tuple[float, float]] = {}  # each track's last centre off the line
        self.counted: set[Any] = set()
        self.counts = {"in": 0, "out": 0}

    def update(self, track: Any, centre: tuple[float, float]) -> str | None:
        """``"in"`` or ``"out"`` when this sighting is the track's first crossing, else ``None``."""
        if side(self.line, centre) == 0:
            return None
        before = self.last.get(track)
        self.last[track] = centre
        if before is None or track in self.counted:
            return None
        d = crosses(self.line, before, centre)
        if not d:
            return None
        self.counted.add(track)
        way = "in" if d > 0 else "out"
        self.counts[way] += 1
        return way


# -- counting in and out of a region ------------------------------------------------------------

Region = tuple[tuple[float, float], ...]
Edge = tuple[tuple[float, float], tuple[float, float]]


def parse_region(value: str | Sequence[float]) -> Region:
    """``"x1,y1,x2,y2,x3,y3,…"`` (pixels) or as many numbers → a polygon of three or more corners, closed from
    the last back to the first; one with no area (its corners on one line) or with edges that cross is refused."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise OptionError("count_region", "expected numbers x1,y1,x2,y2,x3,y3,…", value) from None
    if len(parts) < 6 or len(parts) % 2 or not all(math.isfinite(v) for v in parts):
        raise OptionError("count_region", "expected three or more corners: an even count of finite numbers", value)
    given = list(zip(parts[0::2], parts[1::2], strict=True))
    # a corner given twice in a row, or the first again at the end (the polygon closed by hand), is one corner
    kept = [c for i, c in enumerate(given) if i == 0 or c != given[i - 1]]
    corners = tuple(kept[:-1] if len(kept) > 1 and kept[-1] == kept[0] else kept)
    if len(corners) < 3:
        raise OptionError("count_region", "expected three or more corners: an even count of finite numbers", value)
    edges = list(zip(corners, corners[1:] + corners[:1], strict=True))
    first, other = corners[0], next((c for c in corners if c != corners[0]), corners[0])
    if all(side((*first, *other), c) == 0 for c in corners):
        raise OptionError("count_region", "the corners enclose no area (they lie on one line)", value)
    if any(
        _meet(edges[i], edges[j]) for i in range(len(edges)) for j in range(i + 2, len(edges)) if j - i < len(edges) - 1
    ):
        # a bow-tie's two lobes count as inside or outside by the even-odd rule, and one whose lobes are equal
        # has no signed area: what was meant is unclear, so it is asked for again
        raise OptionError("count_region", "two edges cross: give the corners in order around the region", value)
    return corners


def _meet(a: Edge, b: Edge) -> bool:
    """Whether two segments share a point (crossing, touching or overlapping)."""

    def on(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> bool:  # r within p–q's box
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    d1, d2 = side((*b[0], *b[1]), a[0]), side((*b[0], *b[1]), a[1])
    d3, d4 = side((*a[0], *a[1]), b[0]), side((*a[0], *a[1]), b[1])
    if ((d1 > 0) != (d2 > 0) and d1 * d2 != 0) and ((d3 > 0) != (d4 > 0) and d3 * d4 != 0):
        return True
    return (
        (d1 == 0 and on(b[0], b[1], a[0]))
        or (d2 == 0 and on(b[0], b[1], a[1]))
        or (d3 == 0 and on(a[0], a[1], b[0]))
        or (d4 == 0 and on(a[0], a[1], b[1]))
    )


def where(region: Region, point: tuple[float, float]) -> int:
    """1 when ``point`` is inside the polygon, -1 outside, 0 on its edge (even-odd rule)."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(region, region[1:] + region[:1], strict=True):
        if side((x1, y1, x2, y2), point) == 0 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
            return 0
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return 1 if inside else -1


def region_in_view(region: Region, width: int, height: int) -> bool:
    """Whether any part of the polygon lies inside a ``width`` × ``height`` frame: an edge in it, or the frame
    wholly inside the polygon."""
    edges = zip(region, region[1:] + region[:1], strict=True)
    return any(line_in_view((*a, *b), width, height) for a, b in edges) or where(region, (width / 2, height / 2)) > 0


class RegionCounter:
    """Counts tracks into a region ("in": a step from outside to inside) and out of it ("out"), each track at
    most once each way, as :class:`LineCounter` counts a line: a centre on the edge is neither, so the step is
    measured from the last sighting off it; a track first seen inside has not come in."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.last: dict[Any, int] = {}  # each track's last side off the edge: 1 inside, -1 outside
        self.counted: set[tuple[Any, str]] = set()
        self.counts = {"in": 0, "out": 0}

    def update(self, track: Any, centre: tuple[float, float]) -> str | None:
        """``"in"`` or ``"out"`` when this sighting is the track's first step that way, else ``None``."""
        now = where(self.region, centre)
        if now == 0:
            return None
        before = self.last.get(track)
        self.last[track] = now
        if before is None or before == now:
            return None
        way = "in" if now > 0 else "out"
        if (track, way) in self.counted:
            return None
        self.counted.add((track, way))
        self.counts[way] += 1
        return way


# -- MOT files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotRow:
    """One row of a MOTChallenge file: a box of one track in one frame."""

    frame: int  # from 1
    track_id: int
    box: tuple[float, float, float, float]  # x, y, w, h
    score: float = 1.0
    class_id: int = -1
    visibility: float = 1.0


def read_mot(path: str | os.PathLike, *, truth: bool = False) -> list[MotRow]:
    """Rows of a MOT text file: results, or ground truth (``truth``), where a row with ``conf`` 0 is not to be
    considered and is skipped, as motmetrics' and TrackEval's MOT Challenge loaders do. A visibility of -1
    (MOT15's "not given", cnnkit's own ``--format mot``) is full visibility; an id twice in one frame is refused,
    as TrackEval refuses it, and so is a frame before 1. A malformed file is a :class:`CnnkitError` naming its line."""
    try:
        return _read_mot(path, truth)
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: not a readable MOT text file ({reason_of(exc)})") from None


def _read_mot(path: str | os.PathLike, truth: bool) -> list[MotRow]:
    rows = []
    seen: set[tuple[int, int]] = set()
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, as some editors write one, is no field
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            # commas, or blanks and tabs as motmetrics' own loader takes them; a trailing comma ends the row
            parts = re.split(r"\s*,\s*|\s+", line.strip().rstrip(","))
            try:
                v = [float(p) for p in parts]
            except ValueError:
                raise CnnkitError(f"{path}:{n}: not a MOT row: {printable(line.strip()[:80])}") from None
            if len(v) < 6:
                raise CnnkitError(f"{path}:{n}: a MOT row has at least 6 fields")
            if not all(math.isfinite(x) for x in v):
                raise CnnkitError(f"{path}:{n}: a MOT row holds a number that is not finite")
            if v[0] < 1:  # TrackEval refuses such a file too; scored, it would shift every frame by one
                raise CnnkitError(
                    f"{path}:{n}: frame {v[0]:g}: MOT frames count from 1 (a file counted from 0 needs 1 added "
                    "to its first column)"
                )
            score = v[6] if len(v) > 6 else 1.0
            if truth and score == 0:
                continue
            if (int(v[0]), int(v[1])) in seen:
                raise CnnkitError(f"{path}:{n}: id {int(v[1])} appears twice in frame {int(v[0])}")
            seen.add((int(v[0]), int(v[1])))
            rows.append(
                MotRow(
                    int(v[0]),
                    int(v[1]),
                    (v[2], v[3], v[4], v[5]),
                    score,
                    int(v[7]) if len(v) > 7 else -1,
                    v[8] if len(v) > 8 and v[8] >= 0 else 1.0,
                )
            )
    return rows


def mot_lines(record: Any) -> list[str]:
    """A tracked frame record (its ``frame`` and predictions with ``track_id``) as MOT result rows; a box with a
    null coordinate (a NaN the model gave) is left out, a null score is MOT's -1."""
    from cnnkit.records import placed

    data = record if isinstance(record, dict) else record.to_dict()
    frame = data.get("frame")
    frame = 1 if frame is None else int(frame) + 1
    out = []
    for p in placed(data.get("predictions") or [], data.get("width"), data.get("height")):
        if "track_id" not in p or "box" not in p:
            continue
        x1, y1, x2, y2 = p["box"]
        score = f"{p['score']:.4f}" if isinstance(p.get("score"), (int, float)) else "-1"
        out.append(f"{frame},{p['track_id']},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score},-1,-1,-1")
    return out


# -- scoring ------------------------------------------------------------------------------------

METRICS = (
    "idf1",
    "idp",
    "idr",
    "mota",
    "motp",
    "num_switches",
    "num_false_positives",
    "num_misses",
    "num_objects",
    "mostly_tracked",
    "mostly_lost",
    "num_unique_objects",
)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = min(ax2, bx2) - max(a[0], b[0]), min(ay2, by2) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def accumulate(gt: Iterable[MotRow], hyp: Iterable[MotRow], *, min_visibility: float = 0.5, iou: float = 0.5) -> Any:
    """A ``motmetrics.MOTAccumulator`` over all frames, with ground truth below ``min_visibility`` (and the
    results matched to it) left out."""
    import motmetrics as mm
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    by_frame: dict[int, tuple[list[MotRow], list[MotRow]]] = {}
    for r in gt:
        by_frame.setdefault(r.frame, ([], []))[0].append(r)
    for r in hyp:
        by_frame.setdefault(r.frame, ([], []))[1].append(r)
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in sorted(by_frame):
        g, h = by_frame[frame]
        if h and any(r.visibility < min_visibility for r in g):
            # As TrackEval's MOT Challenge preprocessing: all ground truth matched to the results at once
            # (most overlap, IoU ≥ iou), then the results matched to a hard shape are dropped with it.
            overlap = np.array([[_iou(a.box, b.box) for b in h] for a in g])
            overlap[overlap < iou] = 0.0
            rows, cols = linear_sum_assignment(-overlap)
            drop = {
                c for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0 and g[r].visibility < min_visibility
            }
            h = [b for i, b in enumerate(h) if i not in drop]
        g = [r for r in g if r.visibility >= min_visibility]
        # motmetrics' own iou_matrix calls np.asfarray, gone in NumPy 2: the same matrix, computed here
        dist = np.array([[1.0 - _iou(a.box, b.box) for b in h] for a in g], dtype=float).reshape(len(g), len(h))
        dist[dist > 1.0 - iou] = np.nan
        acc.update([r.track_id for r in g], [r.track_id for r in h], dist, frameid=frame)
    return acc


def overall_motp(parts: Iterable[tuple[float, int]]) -> float:
    """MOTP over several sequences from each one's ``(motp, matched pairs)``: the mean distance over all their
    matched pairs, NaN when none has one. motmetrics weighs every sequence's MOTP by its matches, and a sequence
    without a match has a NaN MOTP, so NaN × 0 made the whole figure NaN."""
    pairs = [(m, n) for m, n in parts if n > 0]
    total = sum(n for _, n in pairs)
    return sum(m * n for m, n in pairs) / total if total else math.nan


def score(
    sequences: Mapping[str, tuple[Iterable[MotRow], Iterable[MotRow]]], *, min_visibility: float = 0.5, iou: float = 0.5
) -> dict[str, dict[str, float | None]]:
    """``{name: (ground truth, results)}`` → ``{name: metrics, …, "OVERALL": metrics}`` (motmetrics' own
    figures: ``idf1``, ``mota`` and ``motp`` as fractions, the counts as ints). OVERALL's ``motp`` is the mean
    distance over the matched pairs of all sequences (:func:`overall_motp`), not motmetrics' own."""
    import motmetrics as mm

    names = list(sequences)
    accs = [accumulate(*sequences[n], min_visibility=min_visibility, iou=iou) for n in names]
    mh = mm.metrics.create()
    table = mh.compute_many(accs, names=names, metrics=[*METRICS, "num_detections"], generate_overall=True)
    table.loc["OVERALL", "motp"] = overall_motp(
        (float(table.loc[n, "motp"]), int(table.loc[n, "num_detections"])) for n in names
    )
    out: dict[str, dict[str, float | None]] = {}
    for name, row in table.iterrows():
        out[str(name)] = {  # nothing matched leaves idp/motp NaN, no ground truth MOTA -inf: None (null) in JSON
            k: (
                int(row[k])
                if k.startswith(("num_", "mostly_"))
                else (round(float(row[k]), 4) if math.isfinite(float(row[k])) else None)
            )
            for k in METRICS
        }
    return out
