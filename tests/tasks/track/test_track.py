"""``cnnkit track`` with the bundled detector on synthetic moving shapes, scored by motmetrics.

Three short videos (60 frames, 256 px) of a seed used for nothing else (``shapes-bytetrack``'s thresholds
were chosen on seed 1; the benchmark's 10 videos are seed 2026). The floors sit a little under what
these videos measured (IDF1 0.958, MOTA 0.962, one of 8 line crossings missed, on 2026-11-30, stage 6 of
the bundled detector at its tracking NMS IoU of 0.5; at 0.7, 0.959 and 0.969; stage 5 measured 0.94 and 0.91), so a regression in decoding, detection, tracking, counting or scoring fails here;
the 10-video goals are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("motmetrics")
pytest.importorskip("lap")

from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.data.moving import (
    Mover,
    MovingScene,
    _clear_of_line,
    _full_area,
    default_line,
    sequence,
    true_crossings,
    write_sequences,
)
from cnnkit.errors import OptionError
from cnnkit.eval.mot import (
    LineCounter,
    MotRow,
    RegionCounter,
    crosses,
    line_in_view,
    parse_line,
    parse_region,
    read_mot,
    region_in_view,
    score,
    where,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("moving") / "shapes"
    write_sequences(out, 3, seed=3, frames=60)
    return out


def test_moving_shapes_are_deterministic_and_have_ground_truth(videos: Path) -> None:
    a, b = sequence(3, 1, frames=8), sequence(3, 1, frames=8)
    for (fa, ga), (fb, gb) in zip(a.frames(), b.frames(), strict=True):
        assert (fa == fb).all() and ga == gb
    summary = json.loads((videos / "summary.json").read_text())
    assert [s["name"] for s in summary["sequences"]] == ["shapes-000", "shapes-001", "shapes-002"]
    rows = read_mot(videos / "shapes-000" / "gt" / "gt.txt")
    assert {r.frame for r in rows} == set(range(1, 61))
    assert all(0 < r.visibility <= 1 and r.box[2] > 0 and r.box[3] > 0 for r in rows)
    ids = {r.track_id for s in summary["sequences"] for r in read_mot(videos / s["gt"])}
    assert len(ids) >= 3


def test_no_shape_stays_hidden_under_others_for_long() -> None:
    """The generator's promise, checked on the rendered frames: no shape has less than half of its pixels in
    view uncovered for more than 12 frames in a row (a shape hidden for long is one no tracker can follow,
    and its crossing of the line would still be counted as true)."""
    for index in range(6):
        seq = sequence(2026, index, frames=60)
        run = dict.fromkeys((m.track_id for m in seq.movers), 0)
        for t, (_, gt) in enumerate(seq.frames()):
            seen = {g.track_id: g for g in gt}
            for m in seq.movers:
                if not m.first <= t <= m.last:
                    continue
                in_view = int(m.mask(t, seq.size).sum())
                if in_view == 0:
                    continue
                g = seen.get(m.track_id)
                shown = 0.0 if g is None else g.visibility * _full_area(m)
                run[m.track_id] = run[m.track_id] + 1 if shown < 0.5 * in_view - 1 else 0
                assert run[m.track_id] <= 12, (index, m.track_id, t)


def test_no_shape_is_first_or_last_seen_on_the_counting_line() -> None:
    """Whether a shape that appears or vanishes on the line crossed it would hang on a fraction of a pixel: the
    generator keeps the centre of every shape's pixels in view at least 3 px (at 256) from the line in the first
    and last frame that show it, checked on the ground truth of 20 sequences at two sizes (unchecked, 20 of 100
    videos of seeds 6001-6005 and 7001-7005 had a shape within 2 px)."""
    for size, index in [(256, i) for i in range(14)] + [(128, i) for i in range(6)]:
        seq = sequence(4343, index, frames=60, size=size)
        centres: dict[int, list[float]] = {}
        for _, gt in seq.frames():
            for g in gt:
                centres.setdefault(g.track_id, []).append(g.centre[0])
        assert centres
        for xs in centres.values():
            assert min(abs(xs[0] - size / 2), abs(xs[-1] - size / 2)) >= 3.0 * size / 256, (size, index)
    on_line = Mover(1, 1, 24.0, (220.0, 40.0, 40.0), 0.0, 0.0, (128.5, 100.0), (-2.0, 0.0), 0, 20)
    assert not _clear_of_line(on_line, 256, 3.0) and _clear_of_line(replace(on_line, start=(140.0, 100.0)), 256, 3.0)


def test_a_shape_that_crosses_partly_hidden_is_a_true_crossing() -> None:
    """A square passes the line and slides under a circle as the video ends: each frame after the crossing
    shows less than half of it, but shows it, so it counts (a tracker sees the part in view and counts it);
    the same square passing wholly hidden, never seen on the far side, does not."""
    import numpy as np

    def scene(y: float) -> MovingScene:
        square = Mover(1, 1, 24.0, (220.0, 40.0, 40.0), 0.0, 0.0, (100.0, y), (3.0, 0.0), 0, 15)
        circle = Mover(2, 0, 44.0, (40.0, 40.0, 220.0), 0.0, 0.0, (170.0, y - 12), (0.0, 0.0), 0, 15)
        return MovingScene(0, 0, 256, 16, 25.0, np.full((256, 256, 3), 90, np.float32), [square, circle], 2.0)

    partly = [g for _, gt in scene(140.0).frames() for g in gt]
    after = [g.visibility for g in partly if g.track_id == 1 and g.centre[0] > 128]
    assert after and all(0 < v < 0.5 for v in after)
    assert true_crossings(partly, default_line(256)) == {"in": 0, "out": 1}
    hidden = scene(128.0)
    hidden.movers[1] = Mover(2, 0, 60.0, (40.0, 40.0, 220.0), 0.0, 0.0, (150.0, 128.0), (0.0, 0.0), 0, 15)
    wholly = [g for _, gt in hidden.frames() for g in gt]
    assert all(g.centre[0] < 128 for g in wholly if g.track_id == 1)  # never seen past the line
    assert true_crossings(wholly, default_line(256)) == {"in": 0, "out": 0}


def test_a_shape_leaving_through_the_edge_counts_where_its_part_in_view_crosses() -> None:
    """A square leaves through the top edge beside the line: its own centre passes the line above the frame,
    past the line's end, but the part in view (what a detector boxes) crosses inside the frame."""
    import numpy as np

    square = Mover(1, 1, 24.0, (220.0, 40.0, 40.0), 0.0, 0.0, (110.0, 30.0), (1.5, -3.0), 0, 17)
    scene = MovingScene(0, 0, 256, 18, 25.0, np.full((256, 256, 3), 90, np.float32), [square], 2.0)
    truth = [g for _, gt in scene.frames() for g in gt]
    assert square.centre(12) == (128.0, -6.0)  # its own centre reaches the line out of view
    at_line = next(g for g in truth if g.centre[0] > 128)
    assert 0 < at_line.centre[1] < 256 and at_line.visibility < 0.5
    assert true_crossings(truth, default_line(256)) == {"in": 0, "out": 1}


def test_a_count_line_outside_the_frame_is_warned_about(videos: Path) -> None:
    assert line_in_view((128, 0, 128, 256), 256, 256) and line_in_view((-50, 100, 300, 120), 256, 256)
    assert not line_in_view((300, 0, 300, 256), 256, 256) and not line_in_view((-10, -5, 400, -1), 256, 256)
    # a long line through the frame, which a check of 257 points along it took to lie outside
    assert line_in_view((64, -1000001, 64, 3000000), 128, 128)
    video = str(videos / "shapes-000.mp4")
    args = ["track", video, "--max-frames", "2", "--threads", "1", "--count-line"]
    outside = CliRunner().invoke(app, [*args, "640,0,640,480"])
    assert outside.exit_code == 0, outside.output
    assert f"{video}: the count line 640,0,640,480 lies outside the 256x256 frame" in outside.stderr
    inside = CliRunner().invoke(app, [*args, "128,0,128,256"])
    assert inside.exit_code == 0 and "lies outside" not in inside.stderr


def test_the_scorer_gives_perfect_and_broken_tracks_their_due() -> None:
    gt = [MotRow(f, i, (10.0 * i + f, 20.0, 10.0, 10.0)) for f in range(1, 11) for i in (1, 5)]
    perfect = score({"s": (gt, gt)})["s"]
    assert perfect["idf1"] == 1.0 and perfect["mota"] == 1.0
    swapped = [MotRow(r.frame, r.track_id if r.frame <= 5 else 6 - r.track_id, r.box) for r in gt]
    broken = score({"s": (gt, swapped)})["s"]
    assert broken["num_switches"] == 2 and broken["idf1"] < 0.6
    hidden = [MotRow(r.frame, r.track_id, r.box, visibility=0.2 if r.track_id == 5 else 1.0) for r in gt]
    only_one = [r for r in gt if r.track_id == 1]
    assert score({"s": (hidden, only_one)})["s"]["mota"] == 1.0  # a hard shape missed costs nothing
    assert score({"s": (hidden, gt)})["s"]["num_false_positives"] == 0  # nor does one found


def test_a_hard_shape_beside_a_visible_one_takes_no_track_from_it(tmp_path: Path) -> None:
    """Ground truth is matched to the results in one go (TrackEval): a track right on a visible shape stays
    its, though it also overlaps a hard one by IoU ≥ 0.5; a ground-truth row with conf 0 is not counted."""
    from cnnkit.eval.mot import read_mot

    gt = [MotRow(1, 1, (0.0, 0.0, 10.0, 10.0)), MotRow(1, 2, (1.0, 0.0, 10.0, 10.0), visibility=0.2)]
    found = score({"s": (gt, [MotRow(1, 7, (0.0, 0.0, 10.0, 10.0), 0.9)])})["s"]
    assert found["mota"] == 1.0 and found["idf1"] == 1.0 and found["num_misses"] == 0
    truth = tmp_path / "gt.txt"
    truth.write_text("1,1,10,10,20,20,1,1,1.0\n1,2,60,60,20,20,0,1,1.0\n")
    rows = read_mot(truth, truth=True)
    assert [r.track_id for r in rows] == [1] and len(read_mot(truth)) == 2
    assert score({"s": (rows, [MotRow(1, 5, (10.0, 10.0, 20.0, 20.0), 0.9)])})["s"]["mota"] == 1.0


def test_line_crossings_count_each_track_once() -> None:
    line = parse_line("10,0,10,100")
    assert crosses(line, (5, 50), (15, 50)) == -crosses(line, (15, 50), (5, 50)) != 0
    assert crosses(line, (5, 150), (15, 150)) == 0  # past the segment's end
    counter = LineCounter(line)
    for x in (5, 10, 15, 5, 15):  # onto the line, over, back and over again: one crossing
        counter.update(1, (x, 50))
    assert sum(counter.counts.values()) == 1
    with pytest.raises(OptionError):
        parse_line("1,2,3")


def test_tracking_scores_and_counts_on_unseen_videos(videos: Path) -> None:
    from cnnkit.tasks.track.val import validate

    metrics = validate(videos, threads=1)
    assert metrics["tracker"] == "shapes-bytetrack" and metrics["frames"] == 180
    assert metrics["overall"]["idf1"] >= 0.93, metrics["overall"]
    assert metrics["overall"]["mota"] >= 0.93, metrics["overall"]
    # counting: on these videos one crossing is missed (shapes-002: 3 in, 2 counted); the goal of exact
    # counts is not met yet (benchmarks/README.md, "Tracking")
    errors = sum(abs(c["true"][way] - c["tracked"][way]) for c in metrics["counts"].values() for way in ("in", "out"))
    assert sum(sum(c["true"].values()) for c in metrics["counts"].values()) >= 5  # the line is crossed
    assert errors <= 1, metrics["counts"]


def test_tracking_defaults_come_from_the_model_and_give_way_to_options() -> None:
    from cnnkit.tasks.detect.predict import Detector
    from cnnkit.tasks.track.predict import Tracker, track_defaults

    own = Tracker.load(threads=1)  # the bundled detector's meta["track"]: shapes-bytetrack at NMS IoU 0.5
    assert (own.tracker_name, own.options.iou, own.options.agnostic) == ("shapes-bytetrack", 0.5, False)
    assert own.tracker_cfg.new_track_thresh == 0.7  # the yaml under cnnkit/tasks/track/trackers
    given = Tracker.load(threads=1, iou=0.7, agnostic_nms=True, tracker="bytetrack")
    assert (given.tracker_name, given.options.iou, given.options.agnostic) == ("bytetrack", 0.7, True)
    assert track_defaults("yolov8n.pt") == {"tracker": "bytetrack", "iou": 0.7}  # a model without its own
    plain = Detector.load(threads=1)  # detect keeps ultralytics' NMS IoU, 0.7
    assert (plain.options.iou, plain.options.agnostic) == (0.7, False)


def test_track_with_an_instance_model_keeps_masks_and_draws_them(videos: Path, tmp_path: Path) -> None:
    import av
    import numpy as np

    from cnnkit.results import decode_rle

    args = ["track", str(videos / "shapes-000.mp4"), "--model", "shapes-maskrcnn", "--max-frames", "6"]
    result = CliRunner().invoke(
        app,
        [
            *args,
            "--format",
            "jsonl",
            "--save-dir",
            str(tmp_path / "s"),
            "--count-line",
            "128,0,128,256",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(6)) and all(r["task"] == "track" for r in records)
    sure = {p["track_id"] for p in records[0]["predictions"] if p["score"] >= 0.5}
    assert len(sure) >= 3 and all("counts" in r for r in records)
    for r in records[1:]:  # the shapes found surely keep their ids, each with its own mask
        for p in r["predictions"]:
            assert decode_rle(p["mask"]).shape == (256, 256) and decode_rle(p["mask"]).any()
        assert sure <= {p["track_id"] for p in r["predictions"]}
    with av.open(str(next((tmp_path / "s").glob("shapes-000*.mp4")))) as saved:
        frame = next(saved.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    with av.open(str(videos / "shapes-000.mp4")) as source:
        plain = next(source.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    inside = decode_rle(records[0]["predictions"][0]["mask"])
    inside[:4], inside[-4:], inside[:, :4], inside[:, -4:] = False, False, False, False
    # the translucent mask tints the pixels of the shape itself, not just its box outline
    assert np.abs(frame[inside] - plain[inside]).mean() > 10
    refused = CliRunner().invoke(app, [*args, "--imgsz", "320"])
    assert refused.exit_code != 0 and "imgsz" in refused.output
    refused = CliRunner().invoke(app, [*args, "--save-txt"])  # the flag, not its True, is named
    assert refused.exit_code == 2 and "Error: --save-txt: is not available" in refused.output, refused.output


def test_track_cli_writes_mot_rows_summaries_and_an_annotated_video(videos: Path, tmp_path: Path) -> None:
    import av

    video = videos / "shapes-000.mp4"
    mot = tmp_path / "tracks.txt"
    save = tmp_path / "saved"
    result = CliRunner().invoke(
        app,
        [
            "track",
            str(video),
            "--max-frames",
            "20",
            "--vid-stride",
            "2",
            "--format",
            "mot",
            "--output",
            str(mot),
            "--save-dir",
            str(save),
            "--count-line",
            "128,0,128,256",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_mot(mot)
    assert rows and {r.frame for r in rows} <= set(range(1, 40, 2))  # frames 0, 2, … 38, written from 1
    assert len({r.track_id for r in rows}) >= 2
    summary = json.loads((save / "tracks.json").read_text())
    assert {t["track_id"] for t in summary["tracks"]} == {r.track_id for r in rows}
    assert all(t["first_frame"] <= t["last_frame"] and t["label"] for t in summary["tracks"])
    (movie,) = save.glob("*.mp4")
    with av.open(str(movie)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 20
        assert (stream.width, stream.height) == (256, 256) and float(stream.average_rate) == pytest.approx(12.5)


def test_label_files_and_crops_of_video_frames_are_named_by_frame(videos: Path, tmp_path: Path) -> None:
    """``--save-txt``/``--save-crop`` on a video write each frame's files (``<stem>_<frame>``, as ultralytics
    names them) beside the annotated video, not nothing."""
    video = videos / "shapes-000.mp4"
    save, out = tmp_path / "saved", tmp_path / "boxes.jsonl"
    args = ["detect", str(video), "--max-frames", "3", "--save-txt", "--save-crop", "--save-dir", str(save)]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    for r in records:
        label = Path(r["label_file"])
        assert label.parent == save / "labels" and label.stem.endswith(f"_{r['frame']}")
        assert len(label.read_text().splitlines()) == len(r["predictions"]) > 0
        assert len(r["crops"]) == len(r["predictions"])
        assert all(Path(c).is_file() and Path(c).stem.endswith(f"_{r['frame']}_{i}") for i, c in enumerate(r["crops"]))
    assert len(list(save.glob("*.mp4"))) == 1


def test_mot_format_is_for_one_video_of_track(videos: Path) -> None:
    result = CliRunner().invoke(app, ["detect", str(videos / "shapes-000.mp4"), "--format", "mot"])
    assert result.exit_code == 2 and "--format mot" in result.output


def test_a_video_that_cannot_be_read_leaves_no_mot_file(tmp_path: Path) -> None:
    """An empty MOT file was left behind, which MOT tools read as a video tracked with nothing found."""
    bad = tmp_path / "audio.mp4"
    bad.write_bytes(b"not a video")
    out = tmp_path / "m.txt"
    result = CliRunner().invoke(app, ["track", str(bad), "--format", "mot", "-o", str(out), "--threads", "1"])
    assert result.exit_code == 1 and str(bad) in result.output and not out.exists()


def test_a_tracked_video_with_nothing_found_gives_an_empty_mot_file(tmp_path: Path) -> None:
    from cnnkit.io.video import VideoWriter

    writer = VideoWriter(tmp_path / "grey.mp4", 10, 64, 64)
    for _ in range(3):
        writer.write(np.full((64, 64, 3), 128, np.uint8))
    out = tmp_path / "m.txt"
    args = ["track", str(writer.close()), "--format", "mot", "-o", str(out), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_text() == ""


@pytest.mark.parametrize("line", ["1,2,3", "nan,0,1,1", "0,0,inf,5", "4,4,4,4"])
def test_a_bad_count_line_names_the_flag(videos: Path, line: str) -> None:
    result = CliRunner().invoke(app, ["track", str(videos / "shapes-000.mp4"), "--count-line", line])
    assert result.exit_code == 2 and "--count-line" in result.output


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tracker_type: bytetrack\ntrack_high_thresh: abc\n", "track_high_thresh must be like 0.25, not 'abc'"),
        ("tracker_type: botsort\ntrack_buffr: 3\n", "unknown setting 'track_buffr'"),
        ("tracker_type: sort\n", "tracker_type 'sort' is not one of"),
        ("tracker_type: bytetrack\nrematch_lost: true\nrematch_iou: 0\n", "rematch_iou above 0 and at most 1"),
        # ReID: a model loaded mid-run (a traceback when missing) that cnnkit would feed no features
        ("tracker_type: botsort\nwith_reid: true\nmodel: nosuch.pt\n", "with_reid: True is not supported"),
        (": : :\n", "not a readable tracker yaml"),  # was exit 1, calling it a model yaml
        # each was a traceback on the first frame, leaving an empty output file
        ("tracker_type: botsort\ngmc_method: bogus\n", "cannot make this tracker (Unknown GMC method: bogus)"),
        ("tracker_type: ocsort\ndelta_t: 2.5\n", "delta_t must be like 3, not 2.5"),
        ("tracker_type: bytetrack\nmatch_thresh: 5\n", "match_thresh must be like 0.8, not 5"),
        ("tracker_type: bytetrack\ntrack_buffer: -5\n", "track_buffer must be like 30, not -5"),
    ],
)
def test_a_bad_tracker_yaml_is_a_usage_error_naming_the_setting(
    videos: Path, tmp_path: Path, text: str, reason: str
) -> None:
    """Settings ultralytics' trackers would fail on with a traceback mid-run are refused before the first frame."""
    yaml = tmp_path / "mine.yaml"
    yaml.write_text(text)
    result = CliRunner().invoke(app, ["track", str(videos / "shapes-000.mp4"), "--tracker", str(yaml)])
    assert result.exit_code == 2 and "--tracker" in result.output and reason in result.output, result.output


def test_a_tracker_yaml_may_set_only_what_it_changes(videos: Path, tmp_path: Path) -> None:
    """The rest comes from ultralytics' yaml of that tracker type, as a partial config would in its CLI."""
    from cnnkit.ultralytics_adapter import tracker_config

    yaml = tmp_path / "mine.yaml"
    yaml.write_text("tracker_type: bytetrack\nnew_track_thresh: 0.6\n")
    cfg = tracker_config(str(yaml))
    assert cfg.new_track_thresh == 0.6 and cfg.track_buffer == 30 and cfg.match_thresh == 0.8
    result = CliRunner().invoke(
        app, ["track", str(videos / "shapes-000.mp4"), "--tracker", str(yaml), "--max-frames", "3"]
    )
    assert result.exit_code == 0, result.output


def test_track_val_reports_through_the_shared_val_path(tmp_path: Path) -> None:
    """`track val` renders the task's report_tables like every val, names its backend and writes --report."""
    import re

    data = tmp_path / "one"
    write_sequences(data, 1, seed=5, frames=12)
    page = tmp_path / "val.html"
    args = ["track", "val", str(data), "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "-f", "json", "--report", str(page)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["frames"] == 12 and metrics["backend"] and metrics["device"] == "cpu"
    entries = json.loads(re.search(r'id="entries">(.*?)</script>', page.read_text(), re.S).group(1))
    truth = read_mot(data / "shapes-000" / "gt" / "gt.txt")
    assert len(entries) == 12 and sum(len(e["v"]["truth"]) for e in entries) == sum(
        r.visibility >= metrics["min_visibility"] for r in truth
    )
    table = CliRunner().invoke(app, [*args, "-f", "table"])
    assert table.exit_code == 0, table.output
    assert "IDF1" in table.stdout and "shapes-000" in table.stdout and f"backend {metrics['backend']}" in table.stdout
    # the counts: dicts in JSON, text in the table (where Python's dicts were printed)
    true, tracked = (metrics["counts"]["shapes-000"][k] for k in ("true", "tracked"))
    assert set(true) == set(tracked) == {"in", "out"} and "{" not in table.stdout
    assert f"in {true['in']} out {true['out']} → in {tracked['in']} out {tracked['out']}" in table.stdout


def test_track_cli_saves_label_files_and_crops_per_frame(videos: Path, tmp_path: Path) -> None:
    """The README's --save row: with --save-txt/--save-crop (detect, track) each frame gets its label file and
    crops, named NAME-HASH_FRAME as ultralytics names a video's."""
    video = videos / "shapes-000.mp4"
    out = tmp_path / "run"
    args = ["track", str(video), "--max-frames", "3", "--threads", "1", "--save-txt", "--save-crop"]
    result = CliRunner().invoke(app, [*args, "--save-dir", str(out), "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    labels = sorted(p.name for p in (out / "labels").glob("*.txt"))
    assert len(labels) == len(frames) == 3 and all(
        name.rsplit("_", 1)[1] in ("0.txt", "1.txt", "2.txt") for name in labels
    )
    assert any((out / "crops").rglob("*.jpg"))
    # each line ends with the box's track id, as `yolo track save_txt=True` writes it
    ids = {p["track_id"] for r in frames for p in r["predictions"]}
    rows = [line.split() for name in labels for line in (out / "labels" / name).read_text().splitlines()]
    assert rows and all(len(row) == 6 for row in rows) and {int(row[5]) for row in rows} == ids


def test_csv_of_a_counting_run_always_has_the_crossed_column(videos: Path, tmp_path: Path) -> None:
    """`crossed` was a column only when some box crossed in the frames written, so two runs' CSVs differed."""
    import csv

    out = tmp_path / "t.csv"
    args = ["track", str(videos / "shapes-000.mp4"), "--max-frames", "2", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--count-line", "0,0,1,1", "-f", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    header = next(csv.reader(out.open()))
    assert header.index("crossed") == header.index("track_id") + 1


def test_video_set_is_written_again_with_exist_ok(tmp_path: Path) -> None:
    """`cnnkit data shapes OUT --video --exist-ok` over an earlier set failed on its first file."""
    out = tmp_path / "v"
    args = ["data", "shapes", str(out), "--video", "--n", "1", "--frames", "3", "--imgsz", "64"]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, [*args, "--exist-ok"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["sequences"][0]["name"] == "shapes-000"
    assert CliRunner().invoke(app, args).exit_code != 0  # without it, refused


def test_track_val_names_sequences_it_could_not_read_and_exits_1(tmp_path: Path) -> None:
    """A sequence summary.json (or its NAME/gt/gt.txt) names without a video was left out unsaid, exit 0; one
    whose video does not open was scored as all missed, its failed record counted as a frame. Each is now a
    failed entry and a warning, left out of the scores, and the run exits 1; the rest are scored."""
    data = tmp_path / "v"
    write_sequences(data, 3, seed=5, frames=8, size=96)
    (data / "shapes-001.mp4").unlink()
    (data / "shapes-002.mp4").write_bytes(b"not a video")
    args = ["track", "val", str(data), "--threads", "1", "-f", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    assert list(metrics["sequences"]) == ["shapes-000"] and metrics["frames"] == 8
    missing, unread = metrics["failed"]
    assert missing["path"] == str(data / "shapes-001.mp4") and missing["frame"] is None
    assert "summary.json names sequence shapes-001" in missing["error"]
    assert unread["path"] == str(data / "shapes-002.mp4") and "cannot open" in unread["error"]
    assert f"failed {data / 'shapes-001.mp4'}: summary.json names sequence shapes-001" in result.stderr
    assert metrics["overall"]["num_objects"] == metrics["sequences"]["shapes-000"]["num_objects"]
    (data / "summary.json").unlink()  # MOT's own layout: the ground truth alone names the sequence
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    gt = data / "shapes-001" / "gt" / "gt.txt"
    assert [f["path"] for f in json.loads(result.stdout)["failed"]] == [str(gt), str(data / "shapes-002.mp4")]
    assert f"failed {gt}: no video shapes-001.mp4" in result.stderr


def test_track_val_counts_decoded_frames_only(tmp_path: Path) -> None:
    """A damaged video's failed records (one past its last frame among them) were counted as frames."""
    from cnnkit.tasks.track.val import validate

    data = tmp_path / "v"
    write_sequences(data, 1, seed=5, frames=8, size=96)
    video = data / "shapes-000.mp4"
    raw = bytearray(video.read_bytes())
    a, b = len(raw) // 3, len(raw) // 2  # the index is at the end: the file opens, frames in between do not decode
    raw[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    video.write_bytes(bytes(raw))
    seen: list = []
    metrics = validate(data, threads=1, on_record=lambda record, truth: seen.append(record))
    assert metrics["failed"] and all(f["path"] == str(video) for f in metrics["failed"])
    assert metrics["frames"] == sum(r.ok for r in seen) < len(seen)


def test_overall_motp_is_the_mean_over_all_matched_pairs() -> None:
    """motmetrics weighs each sequence's MOTP by its matches, and NaN × 0 made the overall null as soon as one
    sequence had no match."""
    gt = [MotRow(f, 1, (10.0 + f, 20.0, 10.0, 10.0)) for f in range(1, 6)]
    near = [MotRow(r.frame, 1, (r.box[0] + 1, 20.0, 10.0, 10.0)) for r in gt]  # 5 pairs at 1 - IoU 9/11
    nearer = [MotRow(r.frame, 1, r.box) for r in gt[:2]]  # 2 pairs at distance 0
    metrics = score({"a": (gt, near), "b": (gt, nearer), "none": (gt, [])})
    assert metrics["none"]["motp"] is None and metrics["a"]["motp"] == pytest.approx(2 / 11, abs=1e-4)
    assert metrics["OVERALL"]["motp"] == pytest.approx(5 * (2 / 11) / 7, abs=1e-4)
    assert score({"none": (gt, [])})["OVERALL"]["motp"] is None


def test_track_val_table_shows_counts_as_text() -> None:
    """The counts column printed Python dicts; a summary.json giving a total is compared as totals."""
    from cnnkit.tasks.track.val import report_tables

    m = {"idf1": 1.0, "mota": 1.0, "num_switches": 0, "num_false_positives": 0, "num_misses": 0}
    metrics = {
        "tracker": "t",
        "model": "m",
        "data": "d",
        "sequences": {"a": m, "b": m, "c": m},
        "overall": m,
        "counts": {
            "a": {"true": {"in": 2, "out": 1}, "tracked": {"in": 2, "out": 0}},
            "b": {"true": 3, "tracked": {"in": 1, "out": 2}},
            "c": {"true": None, "tracked": {"in": 0, "out": 1}},
        },
        "counts_exact": False,
        "frames": 8,
        "failed": [{"path": "x.mp4", "frame": None, "error": "e"}],
        "seconds": 1.0,
    }
    (tab,) = report_tables(metrics)
    assert [row[-1] for row in tab.rows] == ["in 2 out 1 → in 2 out 0", "3 → 3", "? → in 0 out 1", ""]
    assert "1 failed: frames not decoded or sequences left out" in tab.notes


def test_a_region_counts_each_track_once_in_and_once_out() -> None:
    square = parse_region("10,10,50,10,50,50,10,50")
    assert [where(square, p) for p in ((30, 30), (5, 30), (50, 30), (30, 10), (60, 60))] == [1, -1, 0, 0, -1]
    counter = RegionCounter(square)
    for x in (0, 10, 20, 50, 60, 40, 70):  # onto the edge, in, onto the far edge, out, in again, out again
        counter.update(1, (x, 30))
    for x in (30, 40, 55):  # first seen inside: it did not come in, it goes out
        counter.update(2, (x, 30))
    assert counter.counts == {"in": 1, "out": 2}
    assert region_in_view(square, 256, 256) and region_in_view(parse_region("-9,-9,999,-9,500,999"), 256, 256)
    assert not region_in_view(parse_region("300,0,400,0,400,99"), 256, 256)
    for bad in ("1,2,3,4", "0,0,1,1,2", "0,0,1,1,2,2", "0,0,nan,1,2,0"):
        with pytest.raises(OptionError):
            parse_region(bad)
    # a bow-tie's edges cross: with equal lobes it has no signed area and was refused as "no area", with unequal
    # ones taken and counted by the even-odd rule; both are asked for again, in order around the region
    for bow_tie in ("0,0,100,100,100,0,0,100", "0,0,100,100,100,0,0,120"):
        with pytest.raises(OptionError, match="two edges cross"):
            parse_region(bow_tie)
    assert len(parse_region("0,0,10,0,10,10,5,5,0,10")) == 5  # a concave pentagon is a region
    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))  # closed by hand, or a corner twice: the same
    assert parse_region("0,0,10,0,10,10,0,10,0,0") == parse_region("0,0,10,0,10,0,10,10,0,10") == square


def test_count_region_counts_as_a_line_through_its_edge(videos: Path, tmp_path: Path) -> None:
    """A region that is the half of the frame right of x = 128 is entered where a track crosses the line x = 128
    left to right (the line's "out") and left the other way (its "in"), frame by frame the same."""
    video = str(videos / "shapes-002.mp4")
    runs = {}
    for name, zone in (
        ("line", ["--count-line", "128,0,128,256"]),
        ("region", ["--count-region", "128,0,999,0,999,256,128,256"]),
    ):
        out = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(app, ["track", video, *zone, "-o", str(out), "--threads", "1"])
        assert result.exit_code == 0, result.output
        runs[name] = [json.loads(line)["counts"] for line in out.read_text().splitlines()]
    assert sum(runs["line"][-1].values()) >= 1  # the line is crossed in this video
    assert runs["region"] == [{"in": c["out"], "out": c["in"]} for c in runs["line"]]
    both = CliRunner().invoke(app, ["track", video, "--count-line", "0,0,1,1", "--count-region", "0,0,9,0,9,9"])
    assert both.exit_code == 2 and "--count-region" in both.output


@pytest.mark.parametrize("region", ["1,2,3,4", "0,0,5,5,10,10", "0,0,nan,1,2,0"])
def test_a_bad_count_region_names_the_flag(videos: Path, region: str) -> None:
    result = CliRunner().invoke(app, ["track", str(videos / "shapes-000.mp4"), "--count-region", region])
    assert result.exit_code == 2 and "--count-region" in result.output


def test_data_shapes_refuses_options_of_the_other_kind(tmp_path: Path) -> None:
    """`--layout coco` with `--video` (and `--frames` without it) was silently ignored: a dataset of another
    kind than asked, looking right."""
    for args in (
        ["--video", "--layout", "coco"],
        ["--frames", "5"],
        ["--fps", "10"],
        ["--video", "--val-split", "0.5"],
    ):
        result = CliRunner().invoke(app, ["data", "shapes", str(tmp_path / "d"), "--n", "1", *args])
        assert result.exit_code == 2 and args[-2] in result.output, (args, result.output)
        assert not (tmp_path / "d").exists()


def test_in_memory_frames_are_one_sequence_and_persist_keeps_tracks_across_calls(videos: Path) -> None:
    """Arrays from a camera loop were each their own input: the tracker restarted every frame, so nothing was
    ever counted. Now a stream's in-memory frames share a tracker, and ``persist=True`` keeps it from one call
    to the next (ultralytics' ``model.track(frame, persist=True)``): both give the video's own tracks."""
    import av

    import cnnkit

    video, line = str(videos / "shapes-002.mp4"), "128,0,128,256"
    with av.open(video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    def tracks(records: list) -> list[list[int]]:
        return [[p["track_id"] for p in r.predictions] for r in records]

    whole = list(cnnkit.track(video, count_line=line, threads=1))
    assert sum(whole[-1].extra["counts"].values()) >= 1
    streamed = list(cnnkit.load("track", count_line=line, threads=1).stream(iter(frames)))
    assert tracks(streamed) == tracks(whole) and streamed[-1].extra["counts"] == whole[-1].extra["counts"]
    persisted = cnnkit.load("track", count_line=line, threads=1, persist=True)
    one_by_one = [persisted(frame)[0] for frame in frames]
    assert tracks(one_by_one) == tracks(whole) and one_by_one[-1].extra["counts"] == whole[-1].extra["counts"]
    persisted.reset()
    assert persisted(frames[-1])[0].extra["counts"] == {"in": 0, "out": 0}
    # their summaries are the video's too (each array was its own one-frame "track" before), frames numbered in turn
    from cnnkit.tasks.track.summary import IN_MEMORY_SEQUENCE, summarise

    def rows(records: list, path: str) -> list[dict]:
        return [{**row, "path": path, "duration_s": None} for row in summarise(records)]

    assert rows(streamed, video) == rows(whole, video) == rows(one_by_one, video)
    assert {row["path"] for row in summarise(streamed)} == {IN_MEMORY_SEQUENCE}


def test_persist_on_a_tracker_made_for_one_call_is_refused_saying_where_it_belongs() -> None:
    import cnnkit

    with pytest.raises(OptionError, match=r'cnnkit.load\("track", persist=True\)'):
        cnnkit.track(np.zeros((64, 64, 3), np.uint8), persist=True)


def test_track_val_with_another_count_line_does_not_compare_it_with_the_summarys_crossings(tmp_path: Path) -> None:
    """The true crossings of summary.json's line were compared with the counts across the line given instead."""
    data = tmp_path / "v"
    write_sequences(data, 1, seed=1, frames=12, size=96)
    args = ["track", "val", str(data), "--threads", "1", "-f", "json", "--count-line", "0,48,96,48"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["counts"]["shapes-000"]["true"] is None and metrics["counts_exact"] is None
    assert "they are not compared" in result.stderr
    same = CliRunner().invoke(
        app, [*args[:-1], ",".join(str(v) for v in json.loads((data / "summary.json").read_text())["line"])]
    )
    assert json.loads(same.stdout)["counts"]["shapes-000"]["true"] is not None


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"sequences": [{"name": "shapes-000", "crossings": {"in": "x"}}]}']
)
def test_track_val_names_a_summary_it_cannot_read(tmp_path: Path, text: str) -> None:
    """Someone else's summary.json in a MOT folder was a traceback (JSONDecodeError, KeyError, AttributeError)."""
    data = tmp_path / "v"
    write_sequences(data, 1, seed=1, frames=2, size=64)
    (data / "summary.json").write_text(text)
    result = CliRunner().invoke(app, ["track", "val", str(data), "--threads", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None))), result.exception
    assert f"{data / 'summary.json'}: not a summary of sequences" in result.output


def test_track_val_names_a_second_video_of_a_sequence(tmp_path: Path) -> None:
    """a.mp4 and a.mkv beside one a/gt/gt.txt were both tracked and only one scored, unsaid."""
    data = tmp_path / "v"
    write_sequences(data, 2, seed=1, frames=6, size=64)
    (data / "shapes-001.mkv").write_bytes((data / "shapes-001.mp4").read_bytes())
    result = CliRunner().invoke(app, ["track", "val", str(data), "--threads", "1", "-f", "json"])
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    (failed,) = metrics["failed"]
    assert failed["path"] == str(data / "shapes-001.mp4")
    assert "a second video of sequence shapes-001, beside shapes-001.mkv" in failed["error"]
    assert list(metrics["sequences"]) == ["shapes-000", "shapes-001"] and metrics["frames"] == 6 + 6


def test_a_negative_seed_is_refused_before_a_folder_is_made(tmp_path: Path) -> None:
    for args in (["--video"], []):
        result = CliRunner().invoke(app, ["data", "shapes", str(tmp_path / "d"), "--seed", "-5", *args])
        assert result.exit_code == 2 and "--seed" in result.output and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "row",
    ["\ufeff1,1,1,1,10,10,1,1,1", "1 1 1 1 10 10 1 1 1", "1\t1\t1\t1\t10\t10\t1\t1\t1", "1,1,1,1,10,10,1,1,1,"],
)
def test_mot_rows_are_read_as_motmetrics_reads_them(tmp_path: Path, row: str) -> None:
    """A byte-order mark, blanks or tabs between fields, or a trailing comma: motmetrics' loader takes them,
    cnnkit refused the file."""
    path = tmp_path / "gt.txt"
    path.write_text(row + "\n", encoding="utf-8")
    assert read_mot(path, truth=True) == [MotRow(1, 1, (1.0, 1.0, 10.0, 10.0), 1.0, 1, 1.0)]


def test_a_track_summary_names_every_way_a_track_crossed() -> None:
    """A region counts a track once out and once in; its summary said only the last, so the rows of
    tracks.json did not add up to the counts."""
    from cnnkit.tasks.track.summary import summarise

    def record(frame: int, crossed: str | None, counts: dict[str, int]) -> dict:
        box = {"label": "star", "class_id": 0, "score": 0.9, "box": [0, 0, 9, 9], "track_id": 4}
        return {
            "path": "a.mp4",
            "frame": frame,
            "time_s": frame / 25,
            "error": None,
            "counts": counts,
            "predictions": [{**box, "crossed": crossed} if crossed else box],
        }

    records = [
        record(9, None, {"in": 0, "out": 0}),
        record(10, "out", {"in": 0, "out": 1}),
        record(11, None, {"in": 0, "out": 1}),
        record(12, "in", {"in": 1, "out": 1}),
    ]
    (row,) = summarise(records)
    assert row["crossed"] == "out, in" and (row["first_frame"], row["last_frame"], row["frames"]) == (9, 12, 4)
    (once,) = summarise(records[:2])
    assert once["crossed"] == "out"


def test_a_resumed_track_run_keeps_the_summaries_of_the_videos_done_before(videos: Path, tmp_path: Path) -> None:
    """`--skip-existing` skipped the finished videos and then wrote tracks.json of this run alone: an empty
    summary after a rerun of a finished run, a part of one after a resumed run."""
    names = [str(videos / "shapes-000.mp4"), str(videos / "shapes-001.mp4")]

    def track(inputs: list[str], run: str, *extra: str) -> dict:
        out, save = tmp_path / f"{run}.jsonl", tmp_path / run
        args = ["--count-line", "128,0,128,256", "-o", str(out), "--save-dir", str(save), "--threads", "1"]
        result = CliRunner().invoke(app, ["track", *inputs, *args, *extra])
        assert result.exit_code == 0, result.output
        return json.loads((save / "tracks.json").read_text())

    expected = track(names, "whole")
    assert {t["path"] for t in expected["tracks"]} == set(names)
    track(names[:1], "resumed")
    assert track(names, "resumed", "--skip-existing") == expected  # the rest
    assert track(names, "resumed", "--skip-existing") == expected  # nothing left to do
