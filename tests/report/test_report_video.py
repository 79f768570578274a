"""A report of video frames and of a tracking run: each frame named by its index and time, each tracked box by
its track id, and the run's line counts and per-track summaries in their own section (no model, no browser:
hand-made records over a tiny generated video)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from cnnkit.report.html import Report

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def _script(html: str, name: str):
    found = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert found, name
    return json.loads(found.group(1))


def _section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert found, f"no {name} section"
    return found.group(1)


def _rows(table_html: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", table_html, re.S)]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 4-frame, 25 fps clip renamed to a hostile name: a report must name its frames and escape the name."""
    pytest.importorskip("av")
    from cnnkit.data.moving import write_sequences

    folder = tmp_path_factory.mktemp("clip")
    write_sequences(folder, 1, seed=3, frames=4, size=64)
    target = folder / f"clip{HOSTILE.replace('/', '_')}.mp4"
    (folder / "shapes-000.mp4").rename(target)
    return target


def _frame(video: Path, frame: int, predictions: list[dict], **extra) -> dict:
    return {
        "path": str(video),
        "frame": frame,
        "time_s": round(frame / 25, 6),
        "task": "track",
        "model": "m",
        "width": 64,
        "height": 64,
        "predictions": predictions,
        "time_ms": 1.0,
        "error": None,
        "schema_version": 3,
        **extra,
    }


def _box(track: int, label: str, score: float, **extra) -> dict:
    return {"label": label, "class_id": 0, "score": score, "box": [8.0, 8.0, 30.0, 30.0], "track_id": track, **extra}


def _run(video: Path) -> list[dict]:
    """Track 1 (a circle, once seen as a square) in frames 0–3; track 2 from frame 1, crossing in at frame 2."""
    return [
        _frame(video, 0, [_box(1, "circle", 0.9)], counts={"in": 0, "out": 0}),
        _frame(video, 1, [_box(1, "circle", 0.91), _box(2, HOSTILE, 0.5)], counts={"in": 0, "out": 0}),
        _frame(video, 2, [_box(1, "square", 0.6), _box(2, HOSTILE, 0.7, crossed="in")], counts={"in": 1, "out": 0}),
        _frame(video, 3, [_box(1, "circle", 0.8), _box(2, HOSTILE, 0.7)], counts={"in": 1, "out": 0}),
    ]


def test_frame_caption_says_the_frame_and_its_time():
    from cnnkit.report.html import frame_caption

    assert frame_caption(42, 1.68) == "frame 42 · 1.68 s"
    assert frame_caption(0, 0.0) == "frame 0 · 0.00 s"
    assert frame_caption(7, None) == "frame 7"
    assert frame_caption(4500, 180.04) == "frame 4500 · 3:00.04"  # past a minute, as a player shows it
    assert frame_caption(90000, 3725.5) == "frame 90000 · 1:02:05.50"


def test_each_frame_of_a_video_is_its_own_gallery_entry(tmp_path, video):
    """Every frame of a clip looked like the same file: the entry now names the frame and its time, the
    failed table too, and each frame keeps its own index and thumbnail file."""
    records = [_frame(video, i, []) for i in range(4)]
    records.append({**_frame(video, 4, []), "error": "cannot decode (test)", "width": None, "height": None})
    report = Report(tmp_path / "r.html", assets="folder")
    for r in records:
        report.add(r)
    html = report.write().read_text()
    entries, thumbs = _script(html, "entries"), _script(html, "thumbs")
    assert [e["at"] for e in entries] == [
        "frame 0 · 0.00 s",
        "frame 1 · 0.04 s",
        "frame 2 · 0.08 s",
        "frame 3 · 0.12 s",
        "frame 4 · 0.16 s",
    ]
    assert [(e["fr"], e["ts"]) for e in entries] == [(i, i / 25) for i in range(5)]
    assert len({e["i"] for e in entries}) == 5 and len({(e["p"], e["fr"]) for e in entries}) == 5
    assert thumbs[:4] == [f"r_files/{i:06d}.webp" for i in range(4)] and thumbs[4] == ""
    pictures = {(tmp_path / t).read_bytes() for t in thumbs[:4]}
    assert len(pictures) == 4  # four different frames drawn, not the first one four times
    failed = _section(html, "failed")
    assert "frame 4 · 0.16 s" in failed and "cannot decode (test)" in failed
    assert "<script>alert" not in html and "<img src=x" not in html  # the hostile video name is escaped
    assert "&lt;script&gt;alert(1)&lt;" in failed


def test_an_image_entry_has_no_frame_keys(tmp_path):
    report = Report(tmp_path / "r.html")
    report.add({**_frame(Path("a.png"), 0, []), "task": "detect", "error": "missing (test)"} | {"frame": None})
    entry = report.entries[0]
    assert not {"fr", "ts", "at", "k", "x", "c"} & set(entry)


def test_a_track_report_shows_track_ids_line_counts_and_per_track_summaries(tmp_path, video):
    from cnnkit.tasks.track.summary import summarise

    records = _run(video)
    report = Report(tmp_path / "t.html")
    for r in records:
        report.add(r)
    html = report.write().read_text()
    entries = _script(html, "entries")
    assert [e["k"] for e in entries] == [[1], [1, 2], [1, 2], [1, 2]]
    assert entries[2]["x"] == [None, "in"] and "x" not in entries[1]
    assert [e["c"] for e in entries] == [r["counts"] for r in records]
    assert "#tracks" in html  # linked from the header

    tracks = _section(html, "tracks")
    counts, per_track = tracks.split("<h3>Per track</h3>")
    assert _rows(counts) == [[str(escape(video.name)), "1", "0"]]
    expected = summarise(records)  # what `cnnkit track` logs and writes to tracks.json
    assert [r["label"] for r in expected] == ["circle", HOSTILE]
    rows = _rows(per_track)
    assert [row[1:6] for row in rows] == [
        ["1", "circle", "0", "3", "4"],
        ["2", str(escape(HOSTILE)), "1", "3", "3"],
    ]
    assert [row[6:] for row in rows] == [["0.12", ""], ["0.08", "in"]]
    assert "<script>alert" not in html and "<img src=x" not in html


def test_a_resumed_track_report_counts_the_earlier_frames_first(tmp_path, video):
    """A resumed run's earlier records are read back last but go first: a track's first frame is the earlier
    run's, not the first this process saw."""
    records = _run(video)
    report = Report(tmp_path / "t.html")
    for r in records[2:]:
        report.add(r)
    assert report.add_earlier(records[:2]) == 2
    rows = _rows(_section(report.render(), "tracks").split("<h3>Per track</h3>")[1])
    assert [(row[1], row[3], row[4], row[5]) for row in rows] == [("1", "0", "3", "4"), ("2", "1", "3", "3")]


def test_a_report_without_tracks_has_no_track_section(tmp_path, video):
    report = Report(tmp_path / "r.html")
    report.add(
        {**_frame(video, 0, [{"label": "a", "class_id": 0, "score": 0.5, "box": [1, 1, 9, 9]}]), "task": "detect"}
    )
    html = report.render()
    assert 'id="tracks"' not in html and "#tracks" not in html and "k" not in report.entries[0]


def test_a_tracking_records_file_draws_each_box_with_its_track_id():
    """`cnnkit report tracks.jsonl` drew no box at all on a track record's thumbnail (no result was rebuilt
    for the task): it is now the picture the live run draws, ``#id label score`` tags included."""
    from cnnkit.report.thumbs import result_from_dict, thumbnail
    from cnnkit.results import TrackedBox, TrackedInstance, TrackedInstances, Tracks, encode_rle

    record = {
        "path": "v.mp4",
        "frame": 0,
        "task": "track",
        "width": 64,
        "height": 48,
        "error": None,
        "counts": {"in": 0, "out": 0},
        "predictions": [_box(3, "circle", 0.91), {**_box(12, "square", 0.5), "box": [34.0, 10.0, 60.0, 40.0]}],
    }
    again = result_from_dict(record)
    assert isinstance(again, Tracks)
    assert [b.caption for b in again.items] == ["#3 circle 0.91", "#12 square 0.50"]
    live = Tracks(
        [
            TrackedBox("circle", 0, 0.91, (8.0, 8.0, 30.0, 30.0), track_id=3),
            TrackedBox("square", 0, 0.5, (34.0, 10.0, 60.0, 40.0), track_id=12),
        ],
        64,
        48,
    )
    picture = np.full((48, 64, 3), 90, np.uint8)
    drawn = np.asarray(thumbnail(picture, again))
    assert np.array_equal(drawn, np.asarray(thumbnail(picture, live)))
    assert not np.array_equal(drawn, np.asarray(thumbnail(picture, None)))

    mask = np.zeros((48, 64), bool)
    mask[10:20, 10:20] = True
    with_masks = {**record, "predictions": [{**_box(4, "star", 0.8), "mask": encode_rle(mask)}]}
    instances = result_from_dict(with_masks)
    assert isinstance(instances, TrackedInstances) and isinstance(instances.items[0], TrackedInstance)
    assert instances.items[0].caption == "#4 star 0.80"


def test_a_live_track_thumbnail_keeps_its_count_line():
    """Shrinking a tracking frame to its thumbnail turned it into plain boxes: the count line and the counts
    were lost. They are scaled with the boxes."""
    from cnnkit.report.thumbs import scaled, thumbnail
    from cnnkit.results import TrackedBox, Tracks

    frame = Tracks(
        [TrackedBox("circle", 0, 0.9, (10.0, 10.0, 60.0, 60.0), track_id=1)],
        400,
        400,
        line=(200.0, 0.0, 200.0, 400.0),
        counts={"in": 2, "out": 1},
    )
    small = scaled(frame, 0.5, 0.5)
    assert isinstance(small, Tracks) and small.line == (100.0, 0.0, 100.0, 200.0) and small.counts == frame.counts
    assert small.items[0].box == (5.0, 5.0, 30.0, 30.0)
    thumb = np.asarray(thumbnail(np.zeros((400, 400, 3), np.uint8), frame))  # 200 × 200
    assert (thumb[120:, 100] == 255).all() and (thumb[120:, 90] == 0).all()  # the white line, down the middle
