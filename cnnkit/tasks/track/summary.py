"""Per-track summaries made from a run's records: first and last frame, class, length.

Built from records, not from the tracker, so the same summary comes from a live run (the CLI
wraps the record stream) or from a JSON Lines file read back. Memory grows with the number of
tracks, never with the number of frames.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cnnkit.io.sources import IN_MEMORY

IN_MEMORY_SEQUENCE = "<images>"  # the path of the tracks of frames handed over in Python


@dataclass
class TrackSummary:
    """One track in one input: where it was first and last seen, in how many frames, and its labels."""

    path: str
    track_id: int
    first_frame: int
    last_frame: int
    first_s: float | None
    last_s: float | None
    frames: int = 0  # frames in which the track was seen
    labels: Counter[str] = field(default_factory=Counter)
    crossings: list[str] = field(default_factory=list)  # "in", "out": a region counts a track each way once

    @property
    def crossed(self) -> str | None:
        """Which way it crossed: ``"in"``, ``"out"``, or both in the order they came (``"out, in"``)."""
        return ", ".join(self.crossings) or None

    @property
    def label(self) -> str:
        """The label the detector gave it most often."""
        return self.labels.most_common(1)[0][0] if self.labels else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "track_id": self.track_id,
            "label": self.label,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "duration_s": round(self.last_s - self.first_s, 6)
            if self.first_s is not None and self.last_s is not None
            else None,
            "crossed": self.crossed,
        }


class TrackSummaries:
    """Accumulates :class:`TrackSummary` rows from records (dicts or :class:`~cnnkit.records.Record`)."""

    def __init__(self) -> None:
        self.tracks: dict[tuple[str, int], TrackSummary] = {}
        self.counts: dict[str, dict[str, int]] = {}  # each video's final line counts
        self.in_memory = 0  # frames handed over in Python so far: one sequence, as the tracker takes them

    def observe(self, record: Any) -> None:
        data = record if isinstance(record, dict) else record.to_dict()
        if data.get("error") is not None:
            return
        path, frame, t = data["path"], data.get("frame") or 0, data.get("time_s")
        if path.startswith(IN_MEMORY):  # `<image 0>`, `<image 1>` …: the frames of one stream, numbered in turn
            path, frame = IN_MEMORY_SEQUENCE, self.in_memory
            self.in_memory += 1
        if isinstance(data.get("counts"), dict):
            self.counts[path] = dict(data["counts"])
        for p in data.get("predictions") or []:
            if "track_id" not in p:
                continue
            key = (path, int(p["track_id"]))
            s = self.tracks.get(key)
            if s is None:
                s = self.tracks[key] = TrackSummary(path, key[1], frame, frame, t, t)
            s.last_frame, s.last_s = frame, t
            s.frames += 1
            s.labels[p["label"]] += 1
            if p.get("crossed") and p["crossed"] not in s.crossings:
                s.crossings.append(p["crossed"])

    def watch(self, records: Iterable[Any]) -> Iterator[Any]:
        """``records`` unchanged, each observed on its way."""
        for record in records:
            self.observe(record)
            yield record

    def rows(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in sorted(self.tracks.values(), key=lambda s: (s.path, s.track_id))]


def summarise(records: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per track of ``records`` (``path, track_id, label, first_frame, last_frame, frames, duration_s,
    crossed``)."""
    summaries = TrackSummaries()
    for record in records:
        summaries.observe(record)
    return summaries.rows()
