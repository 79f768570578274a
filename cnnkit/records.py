"""One result schema for every task: a :class:`Record` per input image.

Keys are stable and documented in README ("Output schema"). ``to_dict`` returns
plain JSON types only, so writers never need to know about tensors.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

RECORD_KEYS = ("path", "task", "model", "width", "height", "predictions", "time_ms", "error")


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

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        if self.time_ms is not None:
            data["time_ms"] = round(self.time_ms, 3)
        data.update(extra)
        return data

    def to_json(self) -> str:
        """One JSON object; NaN and infinity (which JSON lacks) become ``null``."""
        return json.dumps(finite(self.to_dict())[0], ensure_ascii=False, allow_nan=False)

    @classmethod
    def failed(cls, path: str, task: str, model: str, reason: str) -> "Record":
        return cls(path=path, task=task, model=model, error=reason)


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
    """Raise ``ValueError`` when ``data`` does not follow the documented schema."""
    missing = [k for k in RECORD_KEYS if k not in data]
    if missing:
        raise ValueError(f"record lacks keys {missing}")
    if not isinstance(data["path"], str) or not isinstance(data["task"], str):
        raise ValueError("path and task must be strings")
    if not isinstance(data["predictions"], list):
        raise ValueError("predictions must be a list")
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
    if data["task"] == "classify":
        for p in data["predictions"]:
            if set(p) != {"label", "index", "score"}:
                raise ValueError(f"classify prediction keys {sorted(p)}")
            if not 0.0 <= p["score"] <= 1.0:
                raise ValueError("score outside [0, 1]")


def records_to_frame(records: list[Record] | list[dict[str, Any]], backend: str = "auto") -> Any:
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
