"""Thumbnails with the predictions drawn by the results themselves, and results rebuilt from written records.

A live run hands the typed result (``Record.result``); a JSON Lines file read back has only plain
predictions, so :func:`result_from_dict` rebuilds the result class that drew them. The picture is
brought to the thumbnail's size *before* drawing (the result scaled to match): shrunk, so captions and
box lines stay legible in a 200-pixel thumbnail of a 4,000-pixel photo, and enlarged, so a 64-pixel
picture, which the card shows about three times larger, does not show its captions three times larger too.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cnnkit.records import placed

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from cnnkit.results import Result

THUMB_SIDE = 200  # longest side of a gallery thumbnail, in pixels (cards show 180 × 170)
THUMB_QUALITY = 60  # WebP quality: about 4 KB per 640×480 photo (benchmarks/results/report.md)


def result_from_dict(record: dict[str, Any], labels: Sequence[str] = ()) -> Result | None:
    """The typed result behind a written record's predictions (``None`` for a failed record).

    Segmentation records carry only class fractions; their mask comes from the ``mask`` PNG a run
    with a save folder names in the record, when that file exists.
    """
    from cnnkit.results import Box, Boxes, Classes, ClassScore, Instance, Instances, SegmentMask

    if record.get("error") is not None:
        return None
    task = record.get("task")
    w, h = int(record.get("width") or 1), int(record.get("height") or 1)
    preds = placed(record.get("predictions") or [], w, h)  # a box with null coordinates cannot be drawn
    if task == "classify":
        return Classes([ClassScore(p["label"], int(p.get("class_id", p.get("index", 0))), _score(p)) for p in preds])
    if task == "detect":
        return Boxes([Box(p["label"], int(p["class_id"]), _score(p), tuple(p["box"])) for p in preds], w, h)
    if task == "instance":
        return Instances(
            [Instance(p["label"], int(p["class_id"]), _score(p), tuple(p["box"]), p["mask"]) for p in preds],
            w,
            h,
        )
    if task == "track":
        return _tracks(preds, w, h)
    if task == "segment":
        mask = _saved_mask(record)
        if mask is None:
            return None
        names = list(labels) or _segment_labels(preds)
        return SegmentMask(mask, names)
    return None


def _score(pred: dict[str, Any]) -> float:
    """A prediction's score; a null one (the model's NaN, which JSON cannot hold) is NaN again."""
    return float(pred["score"]) if pred.get("score") is not None else math.nan


def _tracks(preds: list[dict[str, Any]], w: int, h: int) -> Result:
    """A tracking record's boxes (or an instance model's masks) with their ``#id`` captions, as the live run
    drew them. The count line is not in the record, so neither it nor the counts are drawn."""
    from cnnkit.results import Box, Instance, TrackedBox, TrackedInstance, TrackedInstances, Tracks

    def one(p: dict[str, Any]) -> Box:
        args = (p["label"], int(p["class_id"]), _score(p), tuple(p["box"]))
        mask = {"mask": p["mask"]} if "mask" in p else {}
        if "track_id" not in p:
            return (Instance if mask else Box)(*args, **mask)
        kind = TrackedInstance if mask else TrackedBox
        return kind(*args, track_id=int(p["track_id"]), crossed=p.get("crossed"), **mask)

    items = [one(p) for p in preds]
    if items and all(isinstance(b, Instance) for b in items):
        return TrackedInstances(items, w, h)  # type: ignore[arg-type]  # all instances, as checked
    return Tracks(items, w, h)


def _segment_labels(preds: list[dict[str, Any]]) -> list[str]:
    top = max((int(p["class_id"]) for p in preds), default=0)
    names = [f"class_{i}" for i in range(top + 1)]
    for p in preds:
        names[int(p["class_id"])] = p["label"]
    return names


def _saved_mask(record: dict[str, Any]) -> np.ndarray | None:
    import os

    import numpy as np
    from PIL import Image

    saved = record.get("mask")  # a segment run with a save folder names its class-index PNG here
    if not isinstance(saved, str) or not os.path.isfile(saved):
        return None
    try:
        with Image.open(saved) as img:
            if list(img.size) != [record.get("width"), record.get("height")]:
                return None  # not this image's mask (or a file put in its place): its header is all that is read
            return np.asarray(img.convert("L") if img.mode not in ("P", "L") else img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def scaled(result: Result, sx: float, sy: float) -> Result:
    """``result`` in a picture ``sx`` × ``sy`` times the size of the one it was made for."""
    import numpy as np

    from cnnkit.results import Boxes, Instances, Tracks, decode_rle, encode_rle

    if not isinstance(result, Boxes):
        return result  # class captions scale with the picture; a SegmentMask resizes itself when drawn

    def xyxy(v: Sequence[float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = v
        return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)

    def box(b: Any) -> tuple[float, float, float, float]:
        return xyxy(b.box)

    w, h = max(1, round(result.width * sx)), max(1, round(result.height * sy))
    # a tracking frame stays Tracks (its count line and counts drawn too), not plain boxes
    line: dict[str, Any] = {}
    if isinstance(result, Tracks) and result.line is not None:
        line["line"] = xyxy(result.line)
    if isinstance(result, Tracks) and result.region is not None:
        line["region"] = tuple((x * sx, y * sy) for x, y in result.region)
    if isinstance(result, Instances):
        from PIL import Image

        items = []
        for p in result.items:
            mask = Image.fromarray(decode_rle(p.mask).astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
            items.append(replace(p, box=box(p), mask=encode_rle(np.asarray(mask) > 127)))
        return replace(result, items=items, width=w, height=h, **line)
    return replace(result, items=[replace(b, box=box(b)) for b in result.items], width=w, height=h, **line)


def fit(picture: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """``picture`` with its longest side at ``side`` pixels, shrunk or enlarged (the card shows it at about
    that size, so captions drawn on it then show at the size they are drawn)."""
    import numpy as np
    from PIL import Image

    h, w = picture.shape[:2]
    if max(h, w) == side:
        return picture
    k = side / max(h, w)
    img = Image.fromarray(picture).resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)
    return np.asarray(img)


def thumbnail(
    picture: np.ndarray, result: Result | None, size: tuple[int, int] | None = None, side: int = THUMB_SIDE
) -> Image:
    """The gallery picture: ``picture`` fitted to ``side``, then ``result`` (made for ``size`` = (w, h),
    default the picture's own) drawn on it."""
    from PIL import Image

    small = fit(picture, side)
    if result is None:
        return Image.fromarray(small)
    w, h = size or (picture.shape[1], picture.shape[0])
    return (
        result.draw(_contiguous(small))
        if (w, h) == (small.shape[1], small.shape[0])
        else scaled(result, small.shape[1] / w, small.shape[0] / h).draw(_contiguous(small))
    )


def _contiguous(a: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(a)


def encode(image: Image, quality: int = THUMB_QUALITY) -> bytes:
    """A compressed WebP (every browser since 2020 shows it; about a third smaller than JPEG)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/webp") -> str:
    """``data`` as a ``data:`` URI, so a report is one self-contained HTML file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
