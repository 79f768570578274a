"""Synthetic videos of moving shapes with known trajectories and MOT Challenge ground truth.

Sequence ``i`` of seed ``s`` is a pure function of ``numpy.random.default_rng([s, i, 41])``.
Each shape is drawn by the still-scene renderer's own code (:mod:`cnnkit.data.shapes`: the same
polygons, colours far from the background, shading), at the sizes the bundled detector was
trained on (256-pixel scenes), so it sees familiar shapes. Shapes move on straight lines at
constant speed and turn slowly; some enter or leave through an edge partway, paths cross, and
later shapes are painted over earlier ones (occlusion). The ground truth of a frame lists every
shape with any visible pixel: its visible box and its visibility (visible area ÷ whole area).

Layout of :func:`write_sequences` (what TrackEval and motmetrics read)::

    OUT/shapes-000.mp4          the video (H.264 where PyAV has it)
    OUT/shapes-000/gt/gt.txt    frame,id,x,y,w,h,1,class_id+1,visibility   (frames from 1)
    OUT/shapes-000/seqinfo.ini  name, frame rate, length, size
    OUT/summary.json            per sequence: frames, objects, the counting line, its true crossings
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.shapes import CLASSES, _background, _colour_far_from, _shape_mask
from cnnkit.eval.mot import LineCounter, box_centre, side


@dataclass(frozen=True)
class Mover:
    """One shape's whole life: class, look, and a straight path from frame ``first`` to ``last``."""

    track_id: int
    class_id: int
    radius: float
    colour: tuple[float, float, float]
    angle: float  # at its first frame; turns by ``spin`` per frame
    spin: float
    start: tuple[float, float]  # centre at frame ``first``
    velocity: tuple[float, float]  # pixels per frame
    first: int
    last: int  # inclusive

    def centre(self, frame: int) -> tuple[float, float]:
        k = frame - self.first
        return self.start[0] + self.velocity[0] * k, self.start[1] + self.velocity[1] * k

    def turned(self, frame: int) -> float:
        """Its angle at ``frame``."""
        return self.angle + self.spin * (frame - self.first)

    def mask(self, frame: int, size: int) -> np.ndarray:
        """Its pixels at ``frame`` in a ``size`` × ``size`` view (the part in view; others not painted over)."""
        cx, cy = self.centre(frame)
        return _shape_mask(CLASSES[self.class_id], size, size, cx, cy, self.radius, self.turned(frame))


@dataclass(frozen=True)
class GroundTruth:
    """One visible shape in one frame (``frame`` from 0; MOT files count from 1)."""

    frame: int
    track_id: int
    class_id: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive) of the visible part
    visibility: float
    # the centre of the box of the shape's pixels in view, those under other shapes included: where a
    # detector's box centre is when nothing covers the shape (a shape half out of the frame is boxed by its
    # part in view; one half under another is still where it is)
    centre: tuple[float, float] = (0.0, 0.0)


@dataclass
class MovingScene:
    """A generated video: its frames come from :meth:`frames`, its ground truth from the same pass."""

    seed: int
    index: int
    size: int
    length: int
    fps: float
    background: np.ndarray
    movers: list[Mover]
    noise: float

    def frames(self) -> Iterator[tuple[np.ndarray, list[GroundTruth]]]:
        """``(rgb, ground truth)`` per frame, rendered one at a time (a long video never sits in memory)."""
        areas = {m.track_id: _full_area(m) for m in self.movers}
        for t in range(self.length):
            rng = np.random.default_rng([self.seed, self.index, 41, t])
            canvas = self.background.copy()
            painted: list[tuple[Mover, np.ndarray, tuple[float, float]]] = []
            for m in self.movers:
                if not m.first <= t <= m.last:
                    continue
                mask = m.mask(t, self.size)
                if not mask.any():
                    continue
                canvas[mask] = np.asarray(m.colour, np.float32)[None, :] * (
                    1.0 + rng.normal(0, 0.04, (int(mask.sum()), 1))
                )
                painted = [(o, om & ~mask, c) for o, om, c in painted]
                painted.append((m, mask, box_centre(_mask_box(mask))))
            canvas += rng.normal(0, self.noise, canvas.shape)
            gt = []
            for m, mask, centre in painted:
                if not mask.any():
                    continue
                box = _mask_box(mask)
                visibility = round(min(1.0, float(mask.sum()) / areas[m.track_id]), 4)
                gt.append(GroundTruth(t, m.track_id, m.class_id, box, visibility, centre))
            yield np.clip(canvas, 0, 255).astype(np.uint8), gt


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box ``x1, y1, x2, y2`` (``x2``, ``y2`` exclusive) of a mask's pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def true_crossings(truth: Iterable[GroundTruth], line: Sequence[float]) -> dict[str, int]:
    """The true crossings of ``line`` in a sequence's ground truth (in frame order): a shape's centre
    (:attr:`GroundTruth.centre`, the box of its pixels in view) on one side in a frame in which any of the shape
    is visible and on the other side in a later one, each shape once (:class:`~cnnkit.eval.mot.LineCounter`):
    what a counter with perfect detection and identities counts. A shape that crosses while partly hidden
    counts, as it does for a tracker that sees the part in view; one that crosses wholly hidden and is not
    seen again does not; one leaving through the frame's edge at the line's end counts when its part in view
    crosses, where a tracker sees it cross."""
    counter = LineCounter(line)
    for g in truth:
        counter.update(g.track_id, g.centre)
    return dict(counter.counts)


def _full_area(m: Mover) -> float:
    """The shape's whole area in pixels (drawn alone, away from any edge)."""
    side = int(2 * m.radius + 8)
    return float(_shape_mask(CLASSES[m.class_id], side, side, side / 2, side / 2, m.radius, m.angle).sum()) or 1.0


_TRIES = 50


def _distinct_colour(rng: np.random.Generator, mean_bg: np.ndarray, others: list[Mover]) -> np.ndarray:
    """A colour far from the background (as in still scenes) and from every other shape's: two shapes of
    one colour that cross would merge into one blob, which no detector splits."""
    colour = _colour_far_from(rng, mean_bg)
    for _ in range(50):
        if all(np.abs(colour - np.asarray(o.colour)).sum() > 150 for o in others):
            break
        colour = _colour_far_from(rng, mean_bg)
    return colour


def _mover(
    rng: np.random.Generator,
    track_id: int,
    size: int,
    frames: int,
    radius: tuple[float, float],
    speed: tuple[float, float],
    scale: float,
    mean_bg: np.ndarray,
    others: list[Mover],
) -> Mover:
    """One shape's path: it stays in view, enters, leaves, or crosses the whole view."""
    cid = int(rng.integers(len(CLASSES)))
    r = float(rng.uniform(*radius) * size)
    v = float(rng.uniform(*speed) * scale)
    kind = rng.choice(["stay", "enter", "leave", "cross"], p=[0.4, 0.2, 0.2, 0.2])
    via = rng.uniform(size * 0.3, size * 0.7, 2)  # a point in the middle it passes, so paths cross
    heading = rng.uniform(0, 2 * math.pi)
    vel = (v * math.cos(heading), v * math.sin(heading))
    if kind == "stay":  # in view all along: at ``via`` mid-sequence
        first, last, mid = 0, frames - 1, frames // 2
    else:  # from off-screen (enter, cross) or to off-screen (leave, cross) along the heading
        reach = (size / 2 + r) / max(v, 1e-6)  # frames from the middle to beyond an edge, roughly
        mid = int(rng.integers(frames // 4, 3 * frames // 4 + 1))
        first = max(0, int(mid - reach)) if kind in ("enter", "cross") else 0
        last = min(frames - 1, int(mid + reach)) if kind in ("leave", "cross") else frames - 1
    start = (float(via[0] - vel[0] * (mid - first)), float(via[1] - vel[1] * (mid - first)))
    c0, c1, c2 = (float(c) for c in _distinct_colour(rng, mean_bg, others))
    colour = (c0, c1, c2)
    return Mover(
        track_id,
        cid,
        r,
        colour,
        float(rng.uniform(0, 2 * math.pi)),
        float(rng.uniform(-0.03, 0.03)),
        start,
        vel,
        first,
        last,
    )


class _Cover:
    """What later shapes cover of each placed shape, frame by frame (shapes painted later hide earlier ones).

    Built as shapes are placed, so a candidate path is judged by the visibility the ground truth will
    have (the rendered masks), not by a distance that stands in for it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.masks: dict[tuple[Mover, int], np.ndarray] = {}  # by the whole mover: candidates share ids
        self.covered: dict[tuple[int, int], np.ndarray] = {}  # (track_id, frame) → pixels of later shapes

    def mask(self, m: Mover, t: int) -> np.ndarray:
        """A placed shape's pixels at ``t``, kept (a rejected candidate's are not: they would pile up)."""
        key = (m, t)
        if key not in self.masks:
            self.masks[key] = m.mask(t, self.size)
        return self.masks[key]

    def _hidden(self, o: Mover, t: int, extra: np.ndarray | None, min_visibility: float) -> bool:
        """Whether less than ``min_visibility`` of ``o``'s pixels in view stay uncovered at ``t``."""
        cover = self.covered.get((o.track_id, t))
        if extra is not None:
            cover = extra if cover is None else cover | extra
        if cover is None:
            return False
        own = self.mask(o, t)
        area = int(own.sum())
        return area > 0 and int((own & ~cover).sum()) < min_visibility * area

    def _touches(self, a: Mover, b: Mover, t: int) -> bool:
        (ax, ay), (bx, by) = a.centre(t), b.centre(t)
        return math.hypot(ax - bx, ay - by) < a.radius + b.radius

    def fits(self, new: Mover, placed: list[Mover], max_hidden: int, min_visibility: float) -> bool:
        """Whether, with ``new`` painted over ``placed``, no shape is hidden for more than ``max_hidden`` frames
        in a row."""
        drawn: dict[int, np.ndarray] = {}  # the candidate's masks, each frame's drawn once for all placed shapes
        for o in placed:
            run = 0
            for t in range(o.first, o.last + 1):
                extra = None
                if new.first <= t <= new.last and self._touches(o, new, t):
                    if t not in drawn:
                        drawn[t] = new.mask(t, self.size)
                    extra = drawn[t]
                run = run + 1 if self._hidden(o, t, extra, min_visibility) else 0
                if run > max_hidden:
                    return False
        return True

    def place(self, new: Mover, placed: list[Mover]) -> None:
        for o in placed:
            for t in range(max(o.first, new.first), min(o.last, new.last) + 1):
                if self._touches(o, new, t):
                    key, mask = (o.track_id, t), self.mask(new, t)
                    cover = self.covered.get(key)
                    self.covered[key] = mask if cover is None else cover | mask


def sequence(
    seed: int,
    index: int,
    *,
    frames: int = 60,
    size: int = 256,
    fps: float = 25.0,
    objects: tuple[int, int] = (3, 5),
    radius: tuple[float, float] = (0.11, 0.18),
    speed: tuple[float, float] = (1.0, 3.0),
    max_hidden: int = 12,
    min_visibility: float = 0.5,
    line_margin: float = 3.0,
) -> MovingScene:
    """Sequence ``index`` of ``seed``: up to ``objects`` shapes (radius a fraction of ``size``, speed in
    pixels per frame at 256 pixels, scaled with ``size``), some entering, leaving or crossing the view.
    Paths cross, but no shape has less than ``min_visibility`` of its pixels in view uncovered by others
    for more than ``max_hidden`` frames in a row: a shape hidden for long is one no detector sees and no
    tracker can follow, while the ground truth would still ask for it (and count its crossing). Nor is a
    shape first or last in view within ``line_margin`` pixels (at 256, scaled with ``size``) of the counting
    line (:func:`default_line`): whether it crossed would hang on a fraction of a pixel, finer than any box
    says where a shape is. A shape for which no such path is found in a number of tries is left out, so a
    scene may have fewer shapes."""
    rng = np.random.default_rng([seed, index, 41])
    bg = _background(rng, size, size)
    mean_bg = bg.reshape(-1, 3).mean(0)
    scale = size / 256
    movers: list[Mover] = []
    cover = _Cover(size)
    n = int(rng.integers(objects[0], objects[1] + 1))
    for _ in range(n):
        for _ in range(_TRIES):  # a path that only passes the others: crossings, not shapes parked on shapes
            m = _mover(rng, len(movers) + 1, size, frames, radius, speed, scale, mean_bg, movers)
            if _clear_of_line(m, size, line_margin * scale) and cover.fits(m, movers, max_hidden, min_visibility):
                cover.place(m, movers)
                movers.append(m)
                break
    return MovingScene(seed, index, size, frames, fps, bg, movers, float(rng.uniform(2, 6)))


def _clear_of_line(m: Mover, size: int, margin: float) -> bool:
    """Whether the centre of ``m``'s pixels in view (:attr:`GroundTruth.centre`) in the first and the last frame
    that shows any of it is at least ``margin`` pixels from the counting line."""
    x1, y1, x2, y2 = default_line(size)
    length = math.hypot(x2 - x1, y2 - y1)
    for frames in (range(m.first, m.last + 1), range(m.last, m.first - 1, -1)):
        for t in frames:
            mask = m.mask(t, size)
            if mask.any():
                if abs(side((x1, y1, x2, y2), box_centre(_mask_box(mask)))) / length < margin:
                    return False
                break
    return True


# -- counting across a line: the rule of cnnkit.eval.mot, shared with the tracker ---------------


def default_line(size: int) -> tuple[float, float, float, float]:
    """The counting line of every generated sequence: top to bottom through the middle."""
    return (size / 2, 0.0, size / 2, float(size))


# -- files ---------------------------------------------------------------------------------------


_SEQUENCE = re.compile(r"shapes-[0-9]{3,}")


def _drop_earlier_sequences(root: Path) -> None:
    """An earlier set's videos and ground truth in ``root`` (marked by its ``summary.json``) go before a new set is
    written there: a set of fewer videos left the others, which `track val` scored with the new ones."""
    if not (root / "summary.json").is_file():
        return
    for entry in root.iterdir():
        if entry.suffix == ".mp4" and _SEQUENCE.fullmatch(entry.stem) and entry.is_file():
            entry.unlink()
        elif _SEQUENCE.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            for made in (entry / "gt" / "gt.txt", entry / "seqinfo.ini"):
                made.unlink(missing_ok=True)
            for folder in (entry / "gt", entry):
                with contextlib.suppress(OSError):  # a folder holding files of the user's own stays
                    folder.rmdir()


def write_sequences(
    out: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    frames: int = 60,
    size: int = 256,
    fps: float = 25.0,
    min_visibility: float = 0.5,
    crf: int = 18,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``n`` sequences into ``out`` (see the module's layout); returns the summary it writes.

    ``min_visibility`` is the visibility from which a ground-truth shape is expected to be found: ground
    truth below it is written (with its visibility) but not expected. Each sequence's true crossings of
    :func:`default_line` are :func:`true_crossings`. ``overwrite`` replaces an earlier set's files of the same names.
    """
    from cnnkit.io.files import atomic_path, atomic_write_text
    from cnnkit.io.video import VideoWriter

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _drop_earlier_sequences(root)
    line = default_line(size)
    summary: dict[str, Any] = {
        "seed": seed,
        "size": size,
        "fps": fps,
        "frames": frames,
        "line": list(line),
        "min_visibility": min_visibility,
        "sequences": [],
    }
    for i in range(n):
        name = f"shapes-{i:03d}"
        seq = sequence(seed, i, frames=frames, size=size, fps=fps, min_visibility=min_visibility)
        writer = VideoWriter(root / f"{name}.mp4", fps, size, size, overwrite=overwrite, crf=crf)
        rows: list[str] = []
        truth: list[GroundTruth] = []
        try:
            for rgb, gt in seq.frames():
                writer.write(rgb)
                truth += gt
                for g in gt:
                    x1, y1, x2, y2 = g.box
                    rows.append(
                        f"{g.frame + 1},{g.track_id},{x1},{y1},{x2 - x1},{y2 - y1},1,{g.class_id + 1},{g.visibility}"
                    )
            path = writer.close()
        except BaseException:
            writer.abort()
            raise
        with atomic_path(root / name / "gt" / "gt.txt", overwrite=overwrite) as tmp:
            tmp.write_text("\n".join(rows) + "\n")
        atomic_write_text(
            root / name / "seqinfo.ini",
            f"[Sequence]\nname={name}\nimDir=img1\nframeRate={fps:g}\nseqLength={frames}\n"
            f"imWidth={size}\nimHeight={size}\nimExt=.jpg\n",
            overwrite=overwrite,
        )
        summary["sequences"].append(
            {
                "name": name,
                "video": path.name,
                "gt": f"{name}/gt/gt.txt",
                "codec": writer.codec,
                "objects": len(seq.movers),
                "crossings": true_crossings(truth, line),
            }
        )
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n", overwrite=overwrite)
    return summary
