"""Tracking: the detector's boxes (or an instance segmenter's instances) per frame, linked into tracks by an
ultralytics tracker.

The tracker (ByteTrack by default, BOT-SORT) is state that belongs to one video of one stream, so
it lives on the engine's :class:`~cnnkit.engine.StreamState`, never on the predictor: a new
video (or image) in a stream gets a fresh tracker and track ids from 1, and two streams through
one predictor never share tracks. Frames come to :meth:`predict_batch` in input order, so each
batch updates the tracker frame by frame. With ``count_line`` each track is counted once when its
box centre first crosses the line; with ``count_region`` once when it first comes into the polygon and once
when it first leaves it (the rules of :mod:`cnnkit.eval.mot`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.engine import StreamState
from cnnkit.eval.mot import (
    LineCounter,
    RegionCounter,
    box_centre,
    line_in_view,
    parse_line,
    parse_region,
    region_in_view,
)
from cnnkit.io.decode import Decoded
from cnnkit.io.sources import IN_MEMORY
from cnnkit.records import Record
from cnnkit.results import Boxes, Instance, Instances, TrackedBox, TrackedInstance, TrackedInstances, Tracks
from cnnkit.tasks.detect.predict import Detector, Options
from cnnkit.tasks.instance.predict import InstanceSegmenter

DEFAULT_TRACKER = "bytetrack"  # ByteTrack over BOT-SORT by measurement: benchmarks/README.md ("Tracking")
DEFAULT_IOU = 0.7  # NMS IoU, as ultralytics' predict and track

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("cnnkit")


def track_defaults(model_name: str) -> dict[str, Any]:
    """The tracker and NMS IoU a registry model names for tracking with it (``meta["track"]``, as weights
    carry their preprocessing), else ``bytetrack`` and 0.7."""
    from cnnkit.models.registry import find_spec

    spec = find_spec(model_name)
    own = dict(spec.meta.get("track", {})) if spec is not None else {}
    return {"tracker": DEFAULT_TRACKER, "iou": DEFAULT_IOU, **own}


class Detections:
    """Boxes as ultralytics' trackers read them: ``conf``, ``cls``, ``xyxy``, ``xywh`` and boolean indexing."""

    def __init__(self, rows: np.ndarray) -> None:
        self.data = rows.reshape(-1, 6).astype(np.float32)

    @property
    def xyxy(self) -> np.ndarray:
        return self.data[:, :4]

    @property
    def xywh(self) -> np.ndarray:
        x1, y1, x2, y2 = self.data[:, 0], self.data[:, 1], self.data[:, 2], self.data[:, 3]
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    @property
    def conf(self) -> np.ndarray:
        return self.data[:, 4]

    @property
    def cls(self) -> np.ndarray:
        return self.data[:, 5]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Detections:
        return Detections(self.data[index])


@dataclass
class VideoTracks:
    """One video's tracker and counting state (in ``StreamState.data``)."""

    path: str
    tracker: Any
    counter: LineCounter | RegionCounter | None = None


class Tracking:
    """What a tracking predictor adds to the predictor it extends (:class:`Tracker`, :class:`InstanceTracker`):
    the tracker and count line, one tracker per video in the stream's state, and track ids on each result.

    A sequence is one video, or the in-memory pictures of one stream (arrays from a camera loop have no file to
    tell them apart): its frames share a tracker. With ``persist`` the last sequence's tracks are kept from one
    call to the next, as ultralytics' ``model.track(frame, persist=True)``, until :meth:`reset`.
    """

    task = "track"
    name: str

    @property
    def reads_pixels(self) -> bool:
        """BoT-SORT's camera-motion step reads each frame; ByteTrack only its boxes."""
        return self.tracker_cfg.tracker_type != "bytetrack"

    def _init_tracking(
        self,
        tracker: str | None,
        count_line: str | Sequence[float] | None,
        count_region: str | Sequence[float] | None = None,
        persist: bool = False,
    ) -> None:
        """``tracker``: ``bytetrack``, ``botsort``, ``shapes-bytetrack`` or a yaml (default: the model's own,
        :func:`track_defaults`); ``count_line``: ``x1,y1,x2,y2`` to count crossings of; or ``count_region``:
        ``x1,y1,x2,y2,x3,y3,…``, a polygon to count tracks into and out of; ``persist``: keep tracks across
        calls."""
        from cnnkit import ultralytics_adapter
        from cnnkit.errors import OptionError

        if count_line is not None and count_region is not None:
            raise OptionError(("count_line", "count_region"), "count across a line or in and out of a region, not both")

        tracker = tracker or track_defaults(self.name)["tracker"]
        # static camera: no global motion compensation (BOT-SORT's default optical flow costs time, finds nothing)
        overrides = {"gmc_method": "none"} if tracker == "botsort" else {}
        self.tracker_name = tracker
        self.tracker_cfg = ultralytics_adapter.tracker_config(tracker, **overrides)
        self.count_line = parse_line(count_line) if count_line is not None else None
        self.count_region = parse_region(count_region) if count_region is not None else None
        self.persist = bool(persist)
        self._kept: VideoTracks | None = None  # with persist: the last call's sequence, continued by the next

    def reset(self) -> None:
        """Forget the tracks kept with ``persist``: the next call starts new ones, ids from 1."""
        self._kept = None

    def on_stream_start(self, state: StreamState) -> None:
        state.data["video"] = self._kept if self.persist else None

    def on_stream_end(self, state: StreamState) -> None:
        current = state.data.pop("video", None)
        if self.persist:
            self._kept = current

    def _video(self, state: StreamState, d: Decoded) -> VideoTracks:
        """The current video's tracks; a frame of another input starts fresh ones (ids from 1), and a count
        line wholly outside that input's frame is warned about then."""
        from cnnkit import ultralytics_adapter

        current: VideoTracks | None = state.data.get("video")
        sequence = IN_MEMORY if d.path.startswith(IN_MEMORY) else d.path
        if current is None or current.path != sequence:
            counter: LineCounter | RegionCounter | None = None
            if self.count_line is not None:
                counter = LineCounter(self.count_line)
            elif self.count_region is not None:
                counter = RegionCounter(self.count_region)
            current = VideoTracks(sequence, ultralytics_adapter.make_tracker(self.tracker_cfg), counter)
            state.data["video"] = current
            h, w = d.rgb.shape[:2]
            if self.count_line is not None and not line_in_view(self.count_line, w, h):
                self._outside("line", self.count_line, d.path, w, h)
            if self.count_region is not None and not region_in_view(self.count_region, w, h):
                self._outside("region", [v for xy in self.count_region for v in xy], d.path, w, h)
        return current

    @staticmethod
    def _outside(what: str, numbers: Sequence[float], path: str, w: int, h: int) -> None:
        log.warning(
            "%s: the count %s %s lies outside the %dx%d frame; nothing will cross it",
            path,
            what,
            ",".join(f"{v:g}" for v in numbers),
            w,
            h,
        )

    def _track(self, found: Boxes, d: Decoded, state: StreamState) -> Tracks:
        """One frame through its video's tracker: the frame's detections (boxes or instances) that belong to a
        track, with ids."""
        video = self._video(state, d)
        rows = np.array([[*b.box, b.score, b.class_id] for b in found.items], np.float32).reshape(-1, 6)
        img = d.rgb[..., ::-1] if self.tracker_cfg.tracker_type != "bytetrack" else None  # BGR, as ultralytics
        out = video.tracker.update(Detections(rows), img)
        items: list[TrackedBox] = []
        for row in np.asarray(out).reshape(-1, 8):
            track_id, idx = int(row[4]), int(row[7])
            b = found.items[idx]  # the detection itself (box, score, class, mask), not the Kalman estimate
            crossed = video.counter.update(track_id, box_centre(b.box)) if video.counter is not None else None
            tracked = TrackedInstance if isinstance(b, Instance) else TrackedBox
            items.append(tracked(**{f.name: getattr(b, f.name) for f in fields(b)}, track_id=track_id, crossed=crossed))
        items.sort(key=lambda t: t.track_id)
        counts = dict(video.counter.counts) if video.counter is not None else None
        kind = TrackedInstances if isinstance(found, Instances) else Tracks
        zone = {"line": self.count_line, "region": self.count_region}
        return kind(items, found.width, found.height, counts=counts, **zone)  # type: ignore[arg-type]

    def on_batch_end(self, state: StreamState, records: list[Record]) -> None:
        """Each frame's running count (with ``count_line`` or ``count_region``) goes on its record:
        ``counts: {in, out}``."""
        for record in records:
            if isinstance(record.result, Tracks) and record.result.counts is not None:
                record.extra["counts"] = dict(record.result.counts)


class Tracker(Tracking, Detector):
    """A detector whose boxes carry ``track_id``s, stable across the frames of one video; for an instance
    segmentation model, :meth:`load` gives an :class:`InstanceTracker`."""

    load_options = (
        "tracker",
        "count_line",
        "count_region",
        "persist",
        "mask_threshold",
        "save_masks",
    )  # through load's ``**options``

    def __init__(
        self,
        backend: Any,
        options: Options,
        *,
        tracker: str | None = None,
        count_line: str | Sequence[float] | None = None,
        count_region: str | Sequence[float] | None = None,
        persist: bool = False,
        **saves: bool,
    ) -> None:
        """``tracker``, ``count_line``, ``count_region`` and ``persist``: :meth:`Tracking._init_tracking`."""
        super().__init__(backend, options, **saves)
        self._init_tracking(tracker, count_line, count_region, persist)

    @classmethod
    def load(  # type: ignore[override]  # may give an InstanceTracker
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        conf: float = 0.1,
        iou: float | None = None,
        **options: Any,
    ) -> Tracker | InstanceTracker:
        """:meth:`Detector.load`'s options plus ``tracker`` and ``count_line``. ``conf`` defaults to 0.1, as in
        ``yolo track``: the tracker's second stage uses low-score boxes; ``iou`` to the model's own for tracking
        (:func:`track_defaults`). An instance segmentation model (Mask R-CNN) is tracked with its masks."""
        if _is_instance_model(model, weights):
            return InstanceTracker.load(model, weights, conf=conf, iou=iou, **options)
        tracker = super().load(model, weights, conf=conf, iou=DEFAULT_IOU if iou is None else iou, **options)
        if iou is None:
            tracker.options.iou = float(track_defaults(tracker.name)["iou"])
        return tracker

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> list[Tracks]:  # type: ignore[override]
        dets = self.backend.forward(inputs, [d.rgb.shape[:2] for d in decoded], self.options)
        return [self._track(self._boxes(det, d), d, state) for det, d in zip(dets, decoded, strict=True)]


def _is_instance_model(model: str | None, weights: str | None) -> bool:
    """Whether ``weights`` (else ``model``) is an instance segmentation model, as
    :func:`~cnnkit.models.loader.identify` tells without loading it."""
    from cnnkit.errors import CnnkitError
    from cnnkit.models.loader import identify

    target = weights if weights is not None else model
    if target is None:
        return False
    try:
        task, _, _ = identify(str(target))
    except (CnnkitError, KeyError):  # not identifiable here: the detector's loader says why
        return False
    return task == "instance"


class InstanceTracker(Tracking, InstanceSegmenter):
    """Mask R-CNN's instances with ``track_id``s: tracked by their boxes, drawn and written with their masks."""

    def __init__(
        self,
        loaded: Any,
        runtime: Any,
        *,
        tracker: str | None = None,
        count_line: str | Sequence[float] | None = None,
        count_region: str | Sequence[float] | None = None,
        persist: bool = False,
        **options: Any,
    ) -> None:
        """``tracker``, ``count_line``, ``count_region`` and ``persist``: :meth:`Tracking._init_tracking`;
        ``options``: the segmenter's."""
        super().__init__(loaded, runtime, **options)
        self._init_tracking(tracker, count_line, count_region, persist)

    @classmethod
    def load(  # the detector's options, as cnnkit track gives them
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        conf: float = 0.1,
        iou: float | None = None,
        imgsz: int | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> Self:
        """:meth:`InstanceSegmenter.load`'s options plus ``tracker`` and ``count_line``; ``iou``
        sets Mask R-CNN's own NMS (default: the model's, 0.5); ``imgsz`` and a compiled ``backend`` are not for
        Mask R-CNN and are refused."""
        from cnnkit.errors import OptionError

        boxes_only = {k: options.pop(k, False) for k in ("save_txt", "save_conf", "save_crop")}  # a detector's files
        for name, value, ok in (
            ("imgsz", imgsz, imgsz is None),
            ("backend", backend, backend in (None, "auto", "torch")),
            *((k, v, not v) for k, v in boxes_only.items()),
        ):
            if not ok:
                said = None if isinstance(value, bool) else value  # a flag's True is no value to name
                raise OptionError(name, "is not available when tracking with an instance segmentation model", said)
        made = super().load(model, weights, conf=conf, **options)
        if iou is not None:
            made.model.roi_heads.nms_thresh = float(iou)
        return made

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> list[Tracks]:  # type: ignore[override]
        found = super().predict_batch(inputs, decoded, state)
        return [self._track(f, d, state) for f, d in zip(found, decoded, strict=True)]


PREDICTOR = Tracker
