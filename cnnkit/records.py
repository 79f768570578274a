"""One result schema for every task: a :class:`Record` per input image.

Keys are stable and documented in README ("Output schema"). ``to_dict`` returns
plain JSON types only, so writers never need to know about tensors; the typed result a
predictor made (:mod:`cnnkit.results`) rides along on ``Record.result`` and is never written.

Schema versions: 1 had no ``schema_version`` key and classify predictions said ``index``;
2 writes ``schema_version`` in every record and says ``class_id`` in every task; 3
(:data:`SCHEMA_VERSION`) adds ``frame`` (0-based index in the video) and ``time_s`` (seconds) to
records of video frames, whose ``path`` is the video; image records are as in 2. Readers
(resume, :func:`validate_record`) accept all three.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas
    import polars

    from cnnkit.results import Result

SCHEMA_VERSION = 3
RECORD_KEYS = ("path", "task", "model", "width", "height", "predictions", "time_ms", "error", "schema_version")
# classify prediction keys per schema version (the other tasks never changed)
_CLASSIFY_KEYS = {1: {"label", "index", "score"}, 2: {"label", "class_id", "score"}, 3: {"label", "class_id", "score"}}
VIDEO_KEYS = ("frame", "time_s")  # schema 3: on records of video frames only, after ``path``


@dataclass
class Record:
    """The result for one image; ``error`` is ``None`` when the image was processed."""

    path: str
    task: str
    model: str
    width: int | None = None
    height: int | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    time_ms: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    frame: int | None = None  # a video frame's 0-based index; None for an image
    time_s: float | None = None  # the frame's presentation time in the video
    result: Result | None = field(default=None, repr=False, compare=False)  # typed; never serialised
    # the input's pixels (RGB uint8), only for a video frame or an in-memory image of a stream asked to keep
    # them (a report draws its thumbnail from them); never serialised
    picture: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The record as written: the schema's keys, ``schema_version`` last, then the extras (``saved`` …)."""
        data: dict[str, Any] = {"path": self.path}
        if self.frame is not None:
            data.update(frame=self.frame, time_s=self.time_s)
        data |= {
            "task": self.task,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "predictions": json_copy(self.predictions),
            "time_ms": round(self.time_ms, 3) if self.time_ms is not None else None,
            "error": self.error,
            "schema_version": SCHEMA_VERSION,
        }
        data.update(json_copy(self.extra))
        return data

    def to_json(self) -> str:
        """One JSON object; NaN and infinity (which JSON lacks) become ``null``."""
        return json.dumps(finite(self.to_dict())[0], ensure_ascii=False, allow_nan=False)

    @classmethod
    def failed(
        cls, path: str, task: str, model: str, reason: str, *, frame: int | None = None, time_s: float | None = None
    ) -> Record:
        return cls(path=path, task=task, model=model, error=reason, frame=frame, time_s=time_s)


def json_copy(value: Any) -> Any:
    """A copy of nested dicts, lists and tuples (as lists), so a written record never aliases the live one."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_copy(v) for v in value]
    return value


def finite(value: Any) -> tuple[Any, int]:
    """``value`` with each NaN or infinite float replaced by ``None``, and how many were replaced.

    JSON has no NaN: ``json.dumps`` would write a bare ``NaN`` that strict readers reject.
    """
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        out, bad = {}, 0
        for k, v in value.items():
            out[k], n = finite(v)
            bad += n
        return out, bad
    if isinstance(value, (list, tuple)):
        items, bad = [], 0
        for v in value:
            item, n = finite(v)
            items.append(item)
            bad += n
        return items, bad
    return value, 0


def validate_record(data: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``data`` does not follow the documented schema (version 2, or 1 read back
    from an older file: no ``schema_version``, classify predictions with ``index``)."""
    version = data.get("schema_version", 1)
    if type(version) is not int or version not in _CLASSIFY_KEYS:
        raise ValueError(f"schema_version {version!r}: expected one of {sorted(_CLASSIFY_KEYS)}")
    missing = [k for k in RECORD_KEYS if k not in data and not (k == "schema_version" and version == 1)]
    if missing:
        raise ValueError(f"record lacks keys {missing}")
    if not isinstance(data["path"], str) or not isinstance(data["task"], str):
        raise ValueError("path and task must be strings")
    if not isinstance(data["predictions"], list):
        raise ValueError("predictions must be a list")
    if "frame" in data and version >= 3:
        if type(data["frame"]) is not int or data["frame"] < 0:
            raise ValueError("frame must be an int of at least 0")
        if data.get("time_s") is not None and not isinstance(data["time_s"], (int, float)):
            raise ValueError("time_s must be a number")
    if data["error"] is None:
        for key in ("width", "height"):
            if not isinstance(data[key], int) or data[key] <= 0:
                raise ValueError(f"{key} must be a positive int on a successful record")
        if not isinstance(data["time_ms"], (int, float)):
            raise ValueError("time_ms must be a number")
    else:
        if not isinstance(data["error"], str) or not data["error"] or "\n" in data["error"]:
            raise ValueError("error must be a one-line string")
        if data["predictions"]:
            raise ValueError("a failed record has no predictions")
    for p in data["predictions"]:
        if not isinstance(p, dict):
            raise ValueError("each prediction must be an object")
        if version >= 2 and not (isinstance(p.get("label"), str) and type(p.get("class_id")) is int):
            raise ValueError("each prediction needs a string label and an int class_id")
    if data["task"] == "classify":
        for p in data["predictions"]:
            if set(p) != _CLASSIFY_KEYS[version]:
                raise ValueError(f"classify prediction keys {sorted(p)}")
            score = p["score"]  # null: the model gave NaN, which JSON cannot hold (written as null, said then)
            if score is not None and not (isinstance(score, (int, float)) and 0.0 <= score <= 1.0):
                raise ValueError("score outside [0, 1]")


MAX_COORDINATE = 1e9  # pixels: past any picture's side; a box's width from ±1e308 is infinite


def placed(predictions: list[dict[str, Any]], width: Any = None, height: Any = None) -> list[dict[str, Any]]:
    """The predictions of a record read back that can be drawn or handed on. Left out: a box with a null (a NaN or
    infinity the model gave, written as null) or missing coordinate, one past any picture, or corners the wrong way
    round (a records file edited by hand); a mask whose size is not the record's ``height`` × ``width`` (its
    pixels would be made at the size it claims, 50,000 × 50,000 from a few bytes)."""

    def fits(p: dict[str, Any]) -> bool:
        box, mask = p.get("box"), p.get("mask")
        if "box" in p and not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, (int, float)) and abs(v) <= MAX_COORDINATE for v in box)
            and box[0] <= box[2]
            and box[1] <= box[3]
        ):
            return False
        return not isinstance(mask, dict) or mask.get("size") == [height, width]

    return [p for p in predictions if fits(p)]


def records_to_frame(
    records: list[Record] | list[dict[str, Any]], backend: str = "auto"
) -> pandas.DataFrame | polars.DataFrame:
    """Records as a pandas or polars DataFrame, whichever is installed (or named)."""
    rows = [r.to_dict() if isinstance(r, Record) else r for r in records]
    if backend in ("auto", "pandas"):
        try:
            import pandas as pd

            return pd.DataFrame(rows)
        except ImportError:
            if backend == "pandas":
                raise
    if backend in ("auto", "polars"):
        import polars as pl

        return pl.DataFrame(rows)
    raise ValueError(f"unknown backend {backend!r}")
