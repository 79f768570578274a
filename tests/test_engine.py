"""The engine on its own: tiny fake predictors over in-memory images, no model.

Each image is filled with one grey level ``v``; the fake predictor "classifies" it as class ``v``,
so every record can be checked against the input it came from.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from cnnkit.engine import Predictor, StreamState, run
from cnnkit.errors import CnnkitError
from cnnkit.io.decode import Decoded
from cnnkit.io.pictures import PictureSaver
from cnnkit.io.sources import Item
from cnnkit.records import Record
from cnnkit.results import Classes, ClassScore


def grey(v: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), v, np.uint8)


class Grey(Predictor):
    """Class ``v`` with score 1 for an image of grey level ``v``; logs every call it gets."""

    task = "classify"
    name = "grey"

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.started = 0  # preprocess calls (decode threads)
        self._lock = threading.Lock()

    def preprocess(self, decoded: Decoded) -> int:
        with self._lock:
            self.started += 1
        return int(decoded.rgb[0, 0, 0])

    def predict_batch(self, inputs: list[int], decoded: list[Decoded], state: StreamState) -> list[Classes]:
        self.log.append(("batch", len(inputs)))
        return [Classes([ClassScore(f"v{v}", v, 1.0)]) for v in inputs]

    def on_stream_start(self, state: StreamState) -> None:
        self.log.append(("start", len(state.items)))

    def on_batch_end(self, state: StreamState, records: list[Record]) -> None:
        self.log.append(("batch_end", [r.ok for r in records]))

    def on_stream_end(self, state: StreamState) -> None:
        self.log.append(("end", state.batches))


def ids(records: list[Record]) -> list[int | None]:
    return [r.predictions[0]["class_id"] if r.ok else None for r in records]


def test_order_kept_and_a_failed_decode_is_a_failed_record(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    sources = [grey(0), grey(1), str(bad), grey(3), grey(4)]
    records = Grey()(sources, batch_size=2, workers=3)
    assert [r.path for r in records] == ["<image 0>", "<image 1>", str(bad), "<image 3>", "<image 4>"]
    assert ids(records) == [0, 1, None, 3, 4]
    failed = records[2]
    assert failed.error and "\n" not in failed.error and failed.predictions == [] and failed.result is None
    assert all(r.width == 8 and r.height == 8 and r.time_ms is not None for r in records if r.ok)
    assert isinstance(records[0].result, Classes) and records[0].to_dict()["predictions"] == [
        {"label": "v0", "class_id": 0, "score": 1.0}
    ]


def test_a_failing_batch_fails_its_records_only():
    class Flaky(Grey):
        def predict_batch(self, inputs, decoded, state):
            if 13 in inputs:
                raise CnnkitError("out of memory on this batch")
            return super().predict_batch(inputs, decoded, state)

    records = Flaky()([grey(1), grey(13), grey(2), grey(3)], batch_size=2)
    assert [r.error for r in records] == ["out of memory on this batch"] * 2 + [None, None]
    assert ids(records)[2:] == [2, 3]


def test_hooks_in_order(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    p = Grey()
    list(p.stream([grey(1), str(bad), grey(2), grey(3)], batch_size=2))
    assert p.log == [
        ("start", 4),
        ("batch", 1),
        ("batch_end", [True, False]),
        ("batch", 2),
        ("batch_end", [True, True]),
        ("end", 2),
    ]


def test_stream_end_runs_when_the_consumer_stops_early():
    p = Grey()
    gen = p.stream([grey(i) for i in range(10)], batch_size=2)
    next(gen)
    gen.close()
    assert p.log[0] == ("start", 10) and p.log[-1] == ("end", 1)


def test_batch_end_sees_records_before_they_are_yielded():
    """A tracker-like predictor numbers the images of its own stream in ``on_batch_end``."""

    class Counting(Grey):
        def on_stream_start(self, state):
            state.data["seen"] = 0

        def on_batch_end(self, state, records):
            for r in records:
                r.extra["frame"] = state.data["seen"]
                state.data["seen"] += 1

    p = Counting()
    a = p.stream([grey(10 + i) for i in range(5)], batch_size=2)
    b = p.stream([grey(20 + i) for i in range(4)], batch_size=3)
    got_a, got_b = [], []
    for _ in range(4):  # interleaved, one record from each in turn
        got_a.append(next(a))
        got_b.append(next(b))
    got_a += list(a)
    got_b += list(b)
    assert ids(got_a) == [10, 11, 12, 13, 14] and ids(got_b) == [20, 21, 22, 23]
    assert [r.extra["frame"] for r in got_a] == [0, 1, 2, 3, 4]
    assert [r.extra["frame"] for r in got_b] == [0, 1, 2, 3]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_at_most_two_batches_in_flight(batch_size):
    p = Grey()
    received = 0
    for record in p.stream([grey(i % 250) for i in range(20)], batch_size=batch_size, workers=4):
        assert record.ok
        with p._lock:
            in_flight = p.started - received
        assert in_flight <= 2 * batch_size
        received += 1
    assert received == p.started == 20


def test_saves_go_through_the_result_for_good_records_only(tmp_path):
    from PIL import Image

    saved: list[str] = []

    class Saving(Grey):
        def save_outputs(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
            super().save_outputs(saver, decoded, record)
            saved.append(record.path)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"x")
    records = Saving()([grey(5, 32), str(bad)], save_dir=tmp_path / "out")
    assert saved == ["<image 0>"]
    with Image.open(records[0].extra["saved"]) as img:
        assert img.size == (32, 32)
    assert "saved" not in records[1].extra


def test_run_yields_decoded_beside_each_record():
    pairs = list(run(Grey(), [Item("<a>", grey(7)), Item("<b>", error="no such file")], batch_size=4))
    (rec_a, dec_a), (rec_b, dec_b) = pairs
    assert rec_a.ok and dec_a is not None and dec_a.width == 8
    assert rec_b.error == "no such file" and dec_b is None


def test_a_wrong_number_of_results_is_a_bug_not_a_record():
    class Short(Grey):
        def predict_batch(self, inputs, decoded, state):
            return super().predict_batch(inputs, decoded, state)[:-1]

    with pytest.raises(RuntimeError, match="returned 1 results for 2 inputs"):
        Short()([grey(1), grey(2)], batch_size=2)


class Holding(Grey):
    """Grey that notes, per batch, how many bytes each decoded picture still holds when the forward pass runs."""

    def __init__(self, reads: bool = False) -> None:  # says whether predict_batch reads pixels (the base: yes)
        super().__init__()
        self.held: list[int] = []
        self._reads = reads

    @property
    def reads_pixels(self) -> bool:
        return self._reads

    def predict_batch(self, inputs: list[int], decoded: list[Decoded], state: StreamState) -> list[Classes]:
        self.held += [d.rgb.base.nbytes if d.rgb.base is not None else d.rgb.nbytes for d in decoded]
        assert all(d.rgb.shape == (64, 64, 3) for d in decoded)  # the geometry stays
        return super().predict_batch(inputs, decoded, state)


def test_pixels_go_after_preprocessing_unless_saved_kept_or_read(tmp_path):
    """Two batches in flight held two batches of full-size pictures (24 scans of 169 Mpx: past 14 GB)."""
    images = [grey(v, 64) for v in (10, 20, 30)]
    quiet = Holding()
    assert [r.ok for r in quiet.stream(images, batch_size=2)] == [True] * 3 and max(quiet.held) <= 3
    assert Grey().reads_pixels  # a predictor that does not say so keeps them
    for predictor, options in (
        (Holding(), {"keep_pictures": True}),
        (Holding(), {"save_dir": tmp_path / "saved"}),
        (Holding(reads=True), {}),
    ):
        records = list(predictor.stream(images, batch_size=2, **options))
        assert all(r.ok for r in records) and min(predictor.held) == 64 * 64 * 3
    kept = list(Holding().stream(images, keep_pictures=True))
    assert kept[0].picture is not None and int(np.asarray(kept[0].picture)[0, 0, 0]) == 10
