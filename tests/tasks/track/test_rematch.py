"""Lost tracks matched again by where they were last seen (:mod:`cnnkit.tasks.track.rematch`)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import ultralytics_adapter
from cnnkit.eval.mot import LineCounter, box_centre
from cnnkit.tasks.track.predict import Detections
from cnnkit.tasks.track.rematch import buffered_iou


def passing_behind(rematch: bool) -> tuple[set[int], dict[str, int]]:
    """A box moving left a pixel a frame whose left part goes out of sight for 3 frames (its box shrinks to the
    right, so the Kalman filter learns a velocity to the right), then unseen for 12 frames in which its centre
    crosses x = 200, then seen whole again: its track ids and the count of crossings of that line."""
    tracker = ultralytics_adapter.make_tracker(ultralytics_adapter.tracker_config("bytetrack", rematch_lost=rematch))
    counter = LineCounter((200, 0, 200, 300))
    ids: set[int] = set()
    for t in range(30):
        x = 200 - t
        if t < 10 or t >= 25:
            rows = [[x, 100, x + 40, 140, 0.9, 0]]
        elif t < 13:
            rows = [[x + 8 * (t - 9), 100, x + 40, 140, 0.9, 0]]
        else:
            rows = []
        dets = np.array(rows, np.float32).reshape(-1, 6)
        for row in np.asarray(tracker.update(Detections(dets), None)).reshape(-1, 8):
            ids.add(int(row[4]))
            counter.update(int(row[4]), box_centre(tuple(dets[int(row[7])][:4])))
    return ids, counter.counts


def test_a_track_lost_behind_another_shape_keeps_its_id_and_its_crossing_is_counted() -> None:
    assert passing_behind(rematch=True) == ({1}, {"in": 1, "out": 0})
    assert passing_behind(rematch=False) == ({1, 2}, {"in": 0, "out": 0})  # ultralytics' ByteTrack alone


def test_the_bundled_detectors_tracker_rematches_and_ultralytics_own_do_not() -> None:
    assert ultralytics_adapter.tracker_config("shapes-bytetrack").rematch_lost is True
    for name in ("bytetrack", "botsort"):
        cfg = ultralytics_adapter.tracker_config(name)
        assert cfg.rematch_lost is False and type(ultralytics_adapter.make_tracker(cfg)).__name__ in (
            "BYTETracker",
            "BOTSORT",
        )
    botsort = ultralytics_adapter.make_tracker(ultralytics_adapter.tracker_config("botsort", rematch_lost=True))
    assert type(botsort).__name__ == "RematchingBOTSORT"


def test_buffered_iou_grows_each_box_by_its_own_size() -> None:
    a = np.array([[0, 0, 10, 10]])  # x, y, w, h
    b = np.array([[12, 0, 10, 10], [0, 0, 10, 10]])
    assert buffered_iou(a, b, 0.0) == pytest.approx(np.array([[0.0, 1.0]]))
    grown = buffered_iou(a, b, 0.3)  # 16 px squares from -3 and from 9: they share 4 × 16 px
    assert grown[0, 0] == pytest.approx(64 / (256 + 256 - 64)) and grown[0, 1] == pytest.approx(1.0)
