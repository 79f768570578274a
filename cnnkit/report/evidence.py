"""Val evidence per image: predictions matched against ground truth, precision-recall curves, and the
picture of an image's mistakes (found, false and missed boxes in three colours).

Pure Python and numpy: the report recomputes these from the records and the truth a val command
hands over, so the worst images and the curves never depend on pycocotools' internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

FOUND, FALSE, MISSED = (40, 190, 70), (230, 30, 50), (255, 150, 0)  # green, red, orange
MATCH_IOU = 0.5


@dataclass
class Match:
    """One image's boxes sorted out: indices of true and false predictions, and of missed truths."""

    found: list[int] = field(default_factory=list)
    false: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(
    preds: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], *, threshold: float = MATCH_IOU, conf: float = 0.0
) -> Match:
    """Greedy matching, highest score first, same label, IoU ≥ ``threshold`` (the PASCAL/COCO rule at one IoU).

    Predictions scoring under ``conf`` are ignored (val keeps boxes down to 0.001 for the curves; a
    picture of mistakes shows the ones a user would see).
    """
    out = Match()
    taken: set[int] = set()
    order = sorted((i for i, p in enumerate(preds) if p.get("score", 1.0) >= conf), key=lambda i: -preds[i]["score"])
    for i in order:
        best, best_j = threshold, -1
        for j, t in enumerate(truth):
            if j in taken or t["label"] != preds[i]["label"]:
                continue
            v = iou(preds[i]["box"], t["box"])
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            taken.add(best_j)
            out.found.append(i)
        else:
            out.false.append(i)
    out.missed = [j for j in range(len(truth)) if j not in taken]
    return out


BACKGROUND = "background"


def box_confusion(
    images: Sequence[tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]],
    labels: Sequence[str],
    *,
    threshold: float = MATCH_IOU,
    conf: float = 0.25,
) -> dict[str, Any]:
    """Class confusion of boxes by ultralytics' ``ConfusionMatrix`` rule (8.4): predictions scoring above ``conf``,
    highest first, each take the unclaimed truth of any class they overlap most, when the IoU is above
    ``threshold``; a claimed truth counts under (its class, the prediction's class), an unclaimed one under
    (its class, background: missed), an unpaired prediction under (background: false, its class).

    ``images`` are ``(predictions, truth)`` pairs of box dicts; rows are true, columns predicted (ultralytics'
    matrix transposed), both ``labels`` and a last ``background``. Boxes of other labels are left out.
    """
    index = {label: i for i, label in enumerate(labels)}
    bg = len(labels)
    matrix = [[0] * (bg + 1) for _ in range(bg + 1)]
    for preds, truth in images:
        ps = sorted(
            (p for p in preds if p.get("score", 1.0) > conf and p["label"] in index), key=lambda p: -p.get("score", 1.0)
        )
        ts = [t for t in truth if t["label"] in index]
        claimed: dict[int, int] = {}  # truth → prediction
        for i, p in enumerate(ps):
            best, best_j = threshold, -1
            for j, t in enumerate(ts):
                if j not in claimed and (v := iou(t["box"], p["box"])) > best:
                    best, best_j = v, j
            if best_j >= 0:
                claimed[best_j] = i
        for j, t in enumerate(ts):
            matrix[index[t["label"]]][index[ps[claimed[j]]["label"]] if j in claimed else bg] += 1
        paired = set(claimed.values())
        for i, p in enumerate(ps):
            if i not in paired:
                matrix[bg][index[p["label"]]] += 1
    names = [*labels, BACKGROUND]
    return {"labels": names, "columns": names, "matrix": matrix, "iou": threshold, "conf": conf}


def pr_curves(
    images: Sequence[tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]]],
    *,
    threshold: float = MATCH_IOU,
    points: int = 101,
) -> list[dict[str, Any]]:
    """Per class: precision at ``points`` recall levels (COCO's 101-point interpolation) and AP at ``threshold``.

    ``images`` are ``(predictions, truth)`` pairs of box dicts; classes without truth are left out.
    """
    import numpy as np

    scored: dict[str, list[tuple[float, bool]]] = {}
    positives: dict[str, int] = {}
    for preds, truth in images:
        for t in truth:
            positives[t["label"]] = positives.get(t["label"], 0) + 1
        m = match(preds, truth, threshold=threshold)
        for i in m.found:
            scored.setdefault(preds[i]["label"], []).append((preds[i]["score"], True))
        for i in m.false:
            scored.setdefault(preds[i]["label"], []).append((preds[i]["score"], False))
    curves = []
    levels = np.linspace(0, 1, points)
    for label in sorted(positives):
        hits = sorted(scored.get(label, []), key=lambda s: -s[0])
        tp = np.cumsum([h for _, h in hits]) if hits else np.zeros(0)
        fp = np.cumsum([not h for _, h in hits]) if hits else np.zeros(0)
        recall = tp / positives[label] if hits else np.zeros(0)
        precision = tp / np.maximum(tp + fp, 1) if hits else np.zeros(0)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if hits else np.zeros(0)
        idx = np.searchsorted(recall, levels, side="left")
        at = np.array([envelope[i] if i < len(envelope) else 0.0 for i in idx])
        keep: list[int] = (
            np.unique(np.linspace(0, len(recall) - 1, min(len(recall), 60)).astype(int)).tolist() if hits else []
        )
        curves.append(
            {
                "label": label,
                "ap": round(float(at.mean()), 4),
                "truth": positives[label],
                "recall": [round(float(recall[i]), 4) for i in keep],
                "precision": [round(float(precision[i]), 4) for i in keep],
            }
        )
    return curves


def draw_mistakes(
    picture: np.ndarray,
    preds: Sequence[dict[str, Any]],
    truth: Sequence[dict[str, Any]],
    m: Match,
    scale: tuple[float, float] = (1.0, 1.0),
) -> Image:
    """Found boxes green, false ones red, missed truths orange (dashed): the picture of one image's val."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(picture)
    draw = ImageDraw.Draw(img)
    sx, sy = scale
    width = max(1, min(img.size) // 120)

    def xy(b: Sequence[float]) -> tuple[float, float, float, float]:
        return (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)

    for j in m.missed:
        _dashed(draw, xy(truth[j]["box"]), MISSED, width)
    for i in m.found:
        draw.rectangle(xy(preds[i]["box"]), outline=FOUND, width=width)
    for i in m.false:
        draw.rectangle(xy(preds[i]["box"]), outline=FALSE, width=width)
    return img


def _dashed(draw: Any, box: tuple[float, float, float, float], colour: tuple[int, int, int], width: int) -> None:
    x1, y1, x2, y2 = box
    dash = max(3, width * 3)
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        pos = a
        while pos < b:
            end = min(b, pos + dash)
            draw.line((pos, fixed, end, fixed) if horizontal else (fixed, pos, fixed, end), fill=colour, width=width)
            pos += 2 * dash
