"""A lost track found again by where it was last seen: a buffered-IoU second look for ultralytics' trackers.

ByteTrack and BoT-SORT match a lost track only through its Kalman prediction. A shape passing behind
another is seen as its part in view: that box's centre slides away from the shape's, the filter learns a
velocity the shape does not have, and while the track is lost the prediction drifts off. When the shape
comes out again, the box no longer overlaps the prediction and starts a new track, so a crossing of the
count line made in between is counted by neither track.

After the first association, each lost track's last *observed* box and each unmatched detection are
grown by ``rematch_buffer`` of their size on every side (the buffered IoU of C-BIoU, Yang et al., WACV
2023), and pairs overlapping by at least ``rematch_iou`` are matched one to one (an optimal assignment); a
matched track takes its old id. Settings, in a tracker yaml beside ultralytics' own:

    rematch_lost: True      # off (ultralytics' behaviour) unless set
    rematch_buffer: 0.3
    rematch_iou: 0.2

Chosen on the 100 videos of seeds 6001–6005 and 7001–7005; measured on 100 others (benchmarks/README.md,
"Tracking", run 9).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SETTINGS: dict[str, Any] = {"rematch_lost": False, "rematch_buffer": 0.3, "rematch_iou": 0.2}  # and their defaults


class RematchLost:
    """Mixed in before an ultralytics tracker class (:func:`tracker_class`); uses its association hooks."""

    args: Any
    tracked_stracks: list[Any]
    frame_id: int

    def update(self, results: Any, img: Any = None, feats: Any = None, **kwargs: Any) -> Any:
        """The tracker's update; then each track matched or started in this frame keeps the detection's own box
        (the Kalman state is what drifts), whichever association stage found it."""
        out = super().update(results, img, feats, **kwargs)  # type: ignore[misc]
        boxes = np.asarray(results.xywh, np.float64).reshape(-1, 4)
        for track in self.tracked_stracks:
            if track.end_frame == self.frame_id:
                x, y, w, h = boxes[int(track.idx)]
                track.observed = np.array([x - w / 2, y - h / 2, w, h])
        return out

    def _post_first_association(
        self,
        strack_pool: list[Any],
        detections: list[Any],
        u_track: list[int],
        u_detection: list[int],
        activated: list[Any],
        refind: list[Any],
    ) -> tuple[list[int], list[int]]:
        from ultralytics.trackers.basetrack import TrackState
        from ultralytics.trackers.utils import matching

        u_track, u_detection = super()._post_first_association(  # type: ignore[misc]
            strack_pool, detections, u_track, u_detection, activated, refind
        )
        lost = [i for i in u_track if strack_pool[i].state == TrackState.Lost]
        if not lost or len(u_detection) == 0:
            return u_track, u_detection
        seen = [strack_pool[i].observed for i in lost]
        overlap = buffered_iou(
            np.array(seen), np.array([detections[j].tlwh for j in u_detection]), self.args.rematch_buffer
        )
        matches, _, _ = matching.linear_assignment(1.0 - overlap, thresh=1.0 - self.args.rematch_iou)
        for t, d in matches:
            self._apply_match(strack_pool[lost[t]], detections[u_detection[d]], activated, refind)  # type: ignore[attr-defined]
        tracks, dets = {lost[t] for t, _ in matches}, {u_detection[d] for _, d in matches}
        return [i for i in u_track if i not in tracks], [j for j in u_detection if j not in dets]


def buffered_iou(a: np.ndarray, b: np.ndarray, buffer: float) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (``x, y, w, h`` rows), each grown by ``buffer`` of its
    width and height on every side."""
    from ultralytics.utils.metrics import bbox_ioa

    def grown(tlwh: np.ndarray) -> np.ndarray:
        x, y, w, h = tlwh.reshape(-1, 4).T.astype(np.float64)
        return np.stack([x - buffer * w, y - buffer * h, x + (1 + buffer) * w, y + (1 + buffer) * h], axis=1)

    return np.asarray(bbox_ioa(grown(a), grown(b), iou=True))


def tracker_class(base: type) -> type:
    """``base`` (ultralytics' ``BYTETracker`` or ``BOTSORT``) with lost tracks matched again by
    :class:`RematchLost`."""
    return type(f"Rematching{base.__name__}", (RematchLost, base), {})
