"""The CLI: --report on predict and val, `cnnkit report`, `cnnkit explain` and `cnnkit convert`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
runner = CliRunner()


def _entries(html: str) -> list[dict]:
    return json.loads(re.search(r'<script type="application/json" id="entries">(.*?)</script>', html, re.S).group(1))


def test_predict_report_and_report_command(tmp_path, monkeypatch):
    out, page = tmp_path / "out.jsonl", tmp_path / "run.html"
    args = ["detect", str(SAMPLES / "scene_0.png"), str(SAMPLES / "missing.png"), "-o", str(out), "--report", str(page)]
    monkeypatch.setattr("sys.argv", ["cnnkit", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # one input failed; the report still shows both
    entries = _entries(page.read_text())
    assert [(e["n"], e["ok"]) for e in entries] == [("scene_0.png", True), ("missing.png", False)]
    html = page.read_text()
    assert "shapes-yolov8n" in html and "ultralytics" in html and "--report" in html  # model, backend, command

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.output
    assert out.read_text().count("\n") == 2  # refused before any work: the records are not rewritten

    result = runner.invoke(app, ["report", str(out), "-o", str(tmp_path / "again.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "again.html")
    assert [e["l"] for e in _entries((tmp_path / "again.html").read_text())] == [e["l"] for e in entries]


def test_report_and_convert_read_a_parquet_records_file(tmp_path):
    pytest.importorskip("pyarrow")
    records = tmp_path / "run.parquet"
    made = runner.invoke(
        app, ["detect", str(SAMPLES / "scene_0.png"), str(SAMPLES / "missing.png"), "-o", str(records)]
    )
    assert made.exit_code == 1 and records.read_bytes()[:4] == b"PAR1", made.output
    page = tmp_path / "run.html"
    result = runner.invoke(app, ["report", str(records), "-o", str(page)])
    assert result.exit_code == 0, result.output
    assert [(e["n"], e["ok"]) for e in _entries(page.read_text())] == [("scene_0.png", True), ("missing.png", False)]
    result = runner.invoke(app, ["convert", str(records), "cvat", "-o", str(tmp_path / "cvat.xml")])
    assert result.exit_code == 0 and "scene_0.png" in (tmp_path / "cvat.xml").read_text(), result.output
    (tmp_path / "cut.parquet").write_bytes(records.read_bytes()[:40])
    result = runner.invoke(app, ["report", str(tmp_path / "cut.parquet"), "-o", str(tmp_path / "cut.html")])
    assert result.exit_code == 1 and "not a Parquet file of records" in result.output


@pytest.mark.parametrize("args", [["report", "s3://bucket/x.jsonl"], ["convert", "s3://bucket/x.jsonl", "cvat"]])
def test_report_and_convert_refuse_a_url_by_name(args, tmp_path, monkeypatch):
    """`cnnkit report s3://b/x.jsonl` said "s3:/b/x.jsonl: no such file" (a path collapses the //)."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "Error: s3://bucket/x.jsonl: a URL; records are read from a local file" in result.stderr


def test_convert_command_writes_each_format(tmp_path):
    out = tmp_path / "boxes.jsonl"
    assert runner.invoke(app, ["detect", str(SAMPLES / "scene_1.png"), "-o", str(out)]).exit_code == 0
    for fmt, name in (("labelstudio", "boxes.labelstudio.json"), ("cvat", "boxes.cvat.xml")):
        result = runner.invoke(app, ["convert", str(out), fmt])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).is_file() and str(tmp_path / name) in result.stdout
    tasks = json.loads((tmp_path / "boxes.labelstudio.json").read_text())
    assert len(tasks[0]["predictions"][0]["result"]) == 3
    assert "<RectangleLabels" in (tmp_path / "boxes.labelstudio.config.xml").read_text()
    result = runner.invoke(app, ["convert", str(out), "voc", "-o", str(tmp_path / "voc")])
    assert result.exit_code == 0 and (tmp_path / "voc" / "Annotations" / "scene_1.xml").is_file()
    assert runner.invoke(app, ["convert", str(out), "cvat"]).exit_code == 1  # exists, no --exist-ok
    assert runner.invoke(app, ["convert", str(out), "cvat", "--exist-ok"]).exit_code == 0
    bad = runner.invoke(app, ["convert", str(out), "yaml"])
    assert bad.exit_code == 1 and "labelstudio, cvat, voc" in bad.output


def test_explain_command_saves_overlays_and_a_report(tmp_path):
    result = runner.invoke(
        app,
        [
            "explain",
            str(SAMPLES / "shape_1_circle.png"),
            "--method",
            "gradcam",
            "--method",
            "eigencam",
            "--save-dir",
            str(tmp_path / "maps"),
            "--report",
            str(tmp_path / "x.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["method"], x["target"]) for x in lines] == [("gradcam", "circle"), ("eigencam", "circle")]
    assert all(Path(x["overlay"]).is_file() and Path(x["overlay"]).parent == tmp_path / "maps" for x in lines)
    assert (tmp_path / "x.html").read_text().count('<figure class="card">') == 2

    bad = runner.invoke(
        app, ["explain", str(SAMPLES / "shape_1_circle.png"), "--target", "unicorn", "--save-dir", str(tmp_path / "m2")]
    )
    assert bad.exit_code == 2 and "--target unicorn: not a class of shapes-cnn" in bad.output
    bad = runner.invoke(
        app, ["explain", str(SAMPLES / "shape_1_circle.png"), "--method", "magic", "--save-dir", str(tmp_path / "m3")]
    )
    assert bad.exit_code == 2 and "--method magic" in bad.output


@pytest.mark.parametrize("backend", ["auto", "openvino"])
def test_explain_runs_on_pytorch_whatever_the_default_backend(tmp_path, monkeypatch, backend):
    """Maps need gradients: explain loads the PyTorch model even where predictions default to a compiled
    runtime (``auto`` on a CPU), instead of refusing with a --backend option it does not have."""
    monkeypatch.setenv("CNNKIT_BACKEND", backend)
    for args in (["shape_1_circle.png"], ["scene_0.png", "--task", "detect", "--max-boxes", "1"]):
        result = runner.invoke(
            app,
            [
                "explain",
                str(SAMPLES / args[0]),
                *args[1:],
                "--method",
                "gradcam",
                "--save-dir",
                str(tmp_path / args[0]),
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[0])["method"] == "gradcam"


def test_explain_goes_on_after_a_bad_image_and_names_it(tmp_path):
    bad = tmp_path / "cut.png"
    bad.write_bytes((SAMPLES / "shape_1_circle.png").read_bytes()[:60])
    sources = [str(bad), str(SAMPLES / "shape_1_circle.png"), str(tmp_path / "missing.png")]
    result = runner.invoke(app, ["explain", *sources, "--method", "gradcam", "--save-dir", str(tmp_path / "maps")])
    assert result.exit_code == 1, result.output
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [sources[1]]
    assert f"failed {bad}:" in result.stderr and f"failed {sources[2]}: no such file" in result.stderr
    assert "1 map(s) in" in result.stderr and "2 image(s) failed" in result.stderr


def test_explain_with_a_bad_option_leaves_no_folder_and_a_nul_path_is_a_failure(tmp_path, monkeypatch):
    """A typo in --target fails before any map: no empty runs/explain/expN and no --save-dir blocking the
    corrected rerun. A path with a NUL byte from stdin is a failed input, not a traceback."""
    monkeypatch.chdir(tmp_path)
    image = str(SAMPLES / "shape_1_circle.png")
    for args in (["--save-dir", "maps"], []):
        result = runner.invoke(app, ["explain", image, "--target", "circl", *args])
        assert result.exit_code == 2 and "not a class" in result.output
    assert not (tmp_path / "maps").exists() and not list(tmp_path.glob("runs/explain/exp*"))
    fixed = runner.invoke(app, ["explain", image, "--target", "circle", "--method", "gradcam", "--save-dir", "maps"])
    assert fixed.exit_code == 0 and len(list((tmp_path / "maps").iterdir())) == 1
    nul = runner.invoke(app, ["explain", "-"], input="a\0b.png\n")
    assert nul.exit_code == 1 and "NUL byte" in nul.output and "Traceback" not in nul.output


def test_a_file_name_with_a_newline_stays_on_its_failure_line(tmp_path):
    bad = tmp_path / "bad\nError: fake.png"
    bad.write_bytes(b"")
    result = runner.invoke(app, ["classify", str(bad)])
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("failed ")]
    assert line == f"failed {tmp_path}/bad\\nError: fake.png: empty file"
    assert not any(x.startswith("Error: fake.png") for x in result.stderr.splitlines())


@pytest.mark.slow
def test_classify_val_report_has_the_confusion_matrix(tmp_path, shapes_images):
    import shutil

    for path in sorted(shapes_images.iterdir())[:6]:
        label = path.stem.split("_")[-1]
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "data" / label / path.name)
    result = runner.invoke(
        app,
        [
            "classify",
            "val",
            str(tmp_path / "data"),
            "--save-dir",
            str(tmp_path / "v"),
            "--report",
            str(tmp_path / "val.html"),
            "-f",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    html = (tmp_path / "val.html").read_text()
    assert 'class="confusion"' in html and "top1" in html and len(_entries(html)) == 6
    _names_its_runtime(json.loads(result.stdout), html)


def _names_its_runtime(metrics: dict, html: str) -> None:
    """A val's metrics and its report's run facts say which backend and device produced the scores."""
    assert metrics["backend"] and metrics["device"] and metrics["precision"] in ("fp32", "fp16")
    run = html[html.index('<section id="run">') :]
    assert (
        f"<th>backend</th><td>{metrics['backend']}</td>" in run
        and f"<th>device</th><td>{metrics['device']}</td>" in run
    )


def _thumbs(html: str) -> list[str]:
    return json.loads(re.search(r'<script type="application/json" id="thumbs">(.*?)</script>', html, re.S).group(1))


def test_segment_predict_and_val_reports(tmp_path, masks_data, tiny_checkpoint):
    images = sorted((masks_data / "val" / "images").iterdir())
    res = runner.invoke(
        app,
        [
            "segment",
            *map(str, images),
            "--weights",
            str(tiny_checkpoint),
            "-o",
            str(tmp_path / "seg.jsonl"),
            "--report",
            str(tmp_path / "seg.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "seg.html").read_text()
    assert len(_entries(html)) == len(images) and all(t.startswith("data:image/webp") for t in _thumbs(html))
    res = runner.invoke(
        app,
        [
            "segment",
            "val",
            str(masks_data / "val"),
            "--weights",
            str(tiny_checkpoint),
            "-f",
            "json",
            "--report",
            str(tmp_path / "val.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "val.html").read_text()
    assert "miou" in html and "Per class" in html and len(_entries(html)) == len(images)
    metrics = json.loads(res.stdout)
    _names_its_runtime(metrics, html)
    matrix = metrics["confusion"]["matrix"]  # pixels: every pixel of the split once
    assert sum(map(sum, matrix)) == metrics["pixels"] and "Counts are pixels" in html
    entries = _entries(html)
    assert all("v" in e for e in entries)
    poor = [e for e in entries if e["v"]["bad"]]
    assert all("IoU" in e["v"]["why"] for e in poor)
    table = runner.invoke(
        app, ["segment", "val", str(masks_data / "val"), "--weights", str(tiny_checkpoint), "-f", "table"]
    )
    assert (
        table.exit_code == 0 and "pixel confusion" in table.stdout and f"backend {metrics['backend']}" in table.stdout
    )


def test_instance_val_report_draws_mistakes(tmp_path, coco_data, tiny_ckpt):
    res = runner.invoke(
        app,
        [
            "instance",
            "val",
            str(coco_data),
            "--weights",
            str(tiny_ckpt),
            "--batch-size",
            "2",
            "-f",
            "json",
            "--report",
            str(tmp_path / "val.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "val.html").read_text()
    entries = _entries(html)
    assert len(entries) == json.loads(res.stdout)["images"]
    assert all(e["v"]["truth"] for e in entries)  # every val image has labelled objects
    assert "bbox AP" in html and "Worst images" in html
    metrics = json.loads(res.stdout)
    _names_its_runtime(metrics, html)
    assert metrics["confusion"]["labels"][-1] == "background" and 'class="confusion"' in html


def test_a_resumed_run_reports_all_its_records(tmp_path):
    """--skip-existing with --report: the inputs done before are read back from the output, not lost."""
    out = tmp_path / "out.jsonl"
    first = ["classify", str(SAMPLES / "shape_0_triangle.png"), "-o", str(out)]
    assert runner.invoke(app, first).exit_code == 0
    names = ["shape_0_triangle.png", "shape_1_circle.png", "shape_2_square.png"]
    args = ["classify", *(str(SAMPLES / n) for n in names), "-o", str(out), "--skip-existing"]
    result = runner.invoke(app, [*args, "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    entries = _entries((tmp_path / "r.html").read_text())
    assert [e["n"] for e in entries] == names and [e["i"] for e in entries] == [0, 1, 2]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["l"] for e in entries] == [[p["label"] for p in r["predictions"]] for r in written]
    assert all(t.startswith("data:image/webp") for t in _thumbs((tmp_path / "r.html").read_text()))


def test_report_and_convert_never_write_over_the_records_they_read(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from cnnkit.cli import app

    records = tmp_path / "in.jsonl"
    line = {
        "path": "x.png",
        "task": "classify",
        "model": "m",
        "width": 8,
        "height": 8,
        "predictions": [],
        "error": None,
    }
    records.write_text(_json.dumps(line) + "\n")
    before = records.read_bytes()
    for args in (["report", str(records)], ["convert", str(records), "cvat"], ["convert", str(records), "labelstudio"]):
        result = CliRunner().invoke(app, [*args, "-o", str(records), "--exist-ok"])
        assert result.exit_code != 0 and "would destroy it" in result.stderr, args
        assert records.read_bytes() == before


def test_a_records_line_with_nan_is_skipped_not_a_crash(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.records import Record

    good = Record("a.png", "detect", "m", 8, 8, predictions=[], time_ms=1.0).to_dict()
    nan = {"label": "a", "class_id": 0, "score": float("nan"), "box": [1.0, 1.0, 2.0, 2.0]}
    bad = Record("b.png", "detect", "m", 8, 8, predictions=[nan], time_ms=1.0).to_dict()
    records = tmp_path / "r.jsonl"
    records.write_text(_json.dumps(good) + "\n" + _json.dumps(bad) + "\n")  # Python writes NaN, not JSON
    result = CliRunner().invoke(app, ["report", str(records), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "1 line(s) were not records" in result.stderr and (tmp_path / "r.html").is_file()


def test_a_report_of_video_frame_records_reads_the_frames_again(tmp_path):
    """Records of video frames carry no pixels (Ray's actors send none back; `cnnkit report` reads a records
    file): the thumbnails are the frames read from the video again, not 'not a recognised image format'."""
    pytest.importorskip("av")
    from cnnkit.data.moving import write_sequences

    write_sequences(tmp_path, 1, seed=2, frames=4)
    out = tmp_path / "frames.jsonl"
    result = runner.invoke(app, ["detect", str(tmp_path / "shapes-000.mp4"), "-f", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/webp") >= 4 and "no picture:" not in html


def test_explain_says_when_a_picture_has_no_box_to_explain(tmp_path):
    """A picture without a detection gave no map and no word (only a 0 in the summary)."""
    from PIL import Image

    Image.new("RGB", (64, 48), (40, 40, 40)).save(tmp_path / "empty.png")
    result = runner.invoke(
        app, ["explain", "--task", "detect", str(tmp_path / "empty.png"), "--save-dir", str(tmp_path / "e")]
    )
    assert result.exit_code == 0 and "empty.png: no box to explain" in result.output


def test_a_track_report_names_each_frame_and_track_live_and_from_its_records(tmp_path):
    """`track --report` and `cnnkit report` of its records: each frame's entry names the frame and its time, each
    box its track id, the Tracks section holds the summaries `track` itself makes, and the records file's
    thumbnails are the live run's (they had no boxes: no result was rebuilt for a track record)."""
    pytest.importorskip("av")
    from cnnkit.data.moving import write_sequences
    from cnnkit.report.html import read_records
    from cnnkit.tasks.track.summary import summarise

    write_sequences(tmp_path, 1, seed=2, frames=4)
    video, out, live = tmp_path / "shapes-000.mp4", tmp_path / "t.jsonl", tmp_path / "live.html"
    result = runner.invoke(app, ["track", str(video), "--threads", "1", "-o", str(out), "--report", str(live)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(out), "-o", str(tmp_path / "again.html")])
    assert result.exit_code == 0, result.output
    records = list(read_records(out))
    tracks = summarise(records)
    assert tracks, "the bundled detector found nothing to track"
    pages = [live.read_text(), (tmp_path / "again.html").read_text()]
    for html in pages:
        entries = _entries(html)
        assert [e["at"] for e in entries] == [f"frame {i} · {i * 0.04:.2f} s" for i in range(4)]
        assert [e["k"] for e in entries] == [[p["track_id"] for p in r["predictions"]] for r in records]
        section = re.search(r'<section id="tracks">(.*?)</section>', html, re.S).group(1)
        rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", section)]
        assert [r[1:6] for r in rows] == [
            [str(t["track_id"]), t["label"], str(t["first_frame"]), str(t["last_frame"]), str(t["frames"])]
            for t in tracks
        ]
    assert _thumbs(pages[0]) == _thumbs(pages[1])
