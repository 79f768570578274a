"""Hostile outputs and resumes (issue #14): no run of cnnkit may cost its user data.

Torn and corrupt JSON Lines, an output that is also an input, files that appear during a run,
duplicate records on resume, picture names shared by two inputs, full disks, read-only folders,
NaN in JSON and ``-o -``. Every file is made here, in ``tmp_path``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import pathlib
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError
from cnnkit.io import writers
from cnnkit.io.files import atomic_path
from cnnkit.io.writers import RecordWriter
from cnnkit.records import Record

runner = CliRunner()


def _png(path: Path, height: int = 24, width: int = 32, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)
    return path


def _classify(*args: str | os.PathLike):
    return runner.invoke(app, ["classify", *map(str, args), "--workers", "1", "--batch-size", "2"])


def _strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a JSON Lines file ends with a whole line"
    return [_strict_json(line) for line in text.splitlines()]


def _is_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.fixture()
def images(tmp_path) -> list[Path]:
    return [_png(tmp_path / "in" / f"img_{i}.png", 20 + i, 30 + i, 40 * i) for i in range(3)]


# -- resumes -----------------------------------------------------------------------------------


def test_torn_line_over_one_mib_is_set_aside_and_records_survive(tmp_path, images):
    out = tmp_path / "out.jsonl"
    assert _classify(*images[:2], "-o", out).exit_code == 0
    torn = '{"path": "' + "x" * (2 << 20)  # a crash mid-write of a long record
    with open(out, "a") as f:
        f.write(torn)
    result = _classify(*images, "-o", out, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert sorted(r["path"] for r in _records(out)) == sorted(map(str, images))
    assert Path(f"{out}.torn").read_text() == torn + "\n"


def test_corrupt_whole_line_is_set_aside_on_resume(tmp_path, images):
    out = tmp_path / "out.jsonl"
    assert _classify(images[0], "-o", out).exit_code == 0
    with open(out, "a") as f:
        f.write("{not json\n")
    result = _classify(*images[:2], "-o", out, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in _records(out)] == [str(images[0]), str(images[1])]
    assert Path(f"{out}.torn").read_text() == "{not json\n"


def test_retried_failure_replaces_its_line(tmp_path, images):
    out = tmp_path / "out.jsonl"
    broken = tmp_path / "in" / "late.png"
    broken.write_bytes(b"not a picture yet")
    for _ in range(2):  # failing twice must not give two failed records
        assert _classify(images[0], broken, "-o", out, "--skip-existing").exit_code == 1
    recs = _records(out)
    assert [r["path"] for r in recs].count(str(broken)) == 1
    _png(broken)
    assert _classify(images[0], broken, "-o", out, "--skip-existing").exit_code == 0
    recs = _records(out)
    assert sorted(r["path"] for r in recs) == sorted([str(images[0]), str(broken)])
    assert all(r["error"] is None for r in recs)


def test_path_spelled_two_ways_is_one_input(tmp_path, images, monkeypatch):
    monkeypatch.chdir(images[0].parent)
    out = tmp_path / "out.jsonl"
    assert _classify("img_0.png", "-o", out).exit_code == 0
    assert _classify("./img_0.png", "img_1.png", "-o", out, "--skip-existing").exit_code == 0
    assert [r["path"] for r in _records(out)] == ["img_0.png", "img_1.png"]  # kept as spelled


def test_tidy_keeps_the_newest_record_per_input(tmp_path, monkeypatch):
    from cnnkit.io.writers import tidy_jsonl

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.jsonl"
    lines = [
        {"path": "a.png", "error": "old failure"},
        {"path": "b.png", "error": None, "n": 1},
        {"path": "./a.png", "error": None},
        {"path": "b.png", "error": "newer failure"},
    ]
    out.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n[1, 2]\n")
    state = tidy_jsonl(out)
    assert state.done == {str(tmp_path / "a.png")}  # b's newest record failed: it is retried
    assert state.known == {str(tmp_path / "a.png"), str(tmp_path / "b.png")}
    assert [r["path"] for r in _records(out)] == ["./a.png", "b.png"]
    assert _records(out)[1]["error"] == "newer failure"
    assert Path(f"{out}.torn").read_text() == "[1, 2]\n"


def test_resume_refuses_a_file_that_holds_no_records(tmp_path, images):
    out = tmp_path / "notes.jsonl"
    out.write_bytes(b"\x89PNG\r\n\x1a\nnot records\nat all")
    _is_one_line_error(_classify(images[0], "-o", out, "--skip-existing"), "not a JSON Lines file of records")
    assert out.read_bytes() == b"\x89PNG\r\n\x1a\nnot records\nat all"
    assert not Path(f"{out}.torn").exists()


def test_resume_after_a_crash_in_the_first_record(tmp_path, images):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "' + str(images[0]))
    assert _classify(images[0], "-o", out, "--skip-existing").exit_code == 0
    assert [r["path"] for r in _records(out)] == [str(images[0])]
    assert Path(f"{out}.torn").read_text() == '{"path": "' + str(images[0]) + "\n"


# -- an output that is also an input -----------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [["--exist-ok"], ["--skip-existing"], ["-f", "json", "--exist-ok"], ["-f", "csv", "--exist-ok"]]
)
def test_output_naming_an_input_is_refused(tmp_path, images, extra):
    before = images[1].read_bytes()
    result = _classify(*images, "-o", images[1], *extra)
    _is_one_line_error(result, "is also an input")
    assert images[1].read_bytes() == before


def test_output_spelled_differently_or_hard_linked_is_refused(tmp_path, images, monkeypatch):
    monkeypatch.chdir(images[0].parent)
    before = images[0].read_bytes()
    _is_one_line_error(_classify("img_0.png", "-o", "../in/./img_0.png", "--exist-ok"), "is also an input")
    os.link(images[0], tmp_path / "linked.jsonl")  # the same file under another name
    _is_one_line_error(_classify("img_0.png", "-o", tmp_path / "linked.jsonl", "--exist-ok"), "is also an input")
    assert images[0].read_bytes() == before


def test_a_report_naming_an_input_or_the_records_file_is_refused(tmp_path, images):
    """``--exist-ok`` lets a run replace its own old outputs, never an input, and never one output by another."""
    before = images[0].read_bytes()
    _is_one_line_error(_classify(*images, "--report", images[0], "--exist-ok"), "is also an input")
    assert images[0].read_bytes() == before
    out = tmp_path / "run.html"
    _is_one_line_error(_classify(*images, "-o", out, "--report", out, "--exist-ok"), "is both")
    assert not out.exists()
    _is_one_line_error(
        runner.invoke(app, ["explain", str(images[0]), "--report", str(images[0]), "--exist-ok"]), "is also an input"
    )
    assert images[0].read_bytes() == before


def test_val_output_naming_a_dataset_file_is_refused(tmp_path):
    data = tmp_path / "y"
    assert (
        runner.invoke(app, ["data", "shapes", str(data), "--layout", "yolo", "--n", "6", "--imgsz", "64"]).exit_code
        == 0
    )
    before = (data / "data.yaml").read_bytes()
    for source in (data / "data.yaml", data):  # the yaml itself, or a file inside the dataset folder
        result = runner.invoke(app, ["detect", "val", str(source), "-o", str(data / "data.yaml"), "--exist-ok"])
        _is_one_line_error(result, "is also an input")
    assert (data / "data.yaml").read_bytes() == before


def test_export_over_its_own_checkpoint_is_refused(tmp_path):
    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(
        (Path(__file__).resolve().parents[2] / "cnnkit" / "weights" / "shapes-cnn.safetensors").read_bytes()
    )
    before = weights.read_bytes()
    result = runner.invoke(app, ["export", str(weights), "-o", str(weights), "--exist-ok"])
    _is_one_line_error(result, "is also an input")
    assert weights.read_bytes() == before


def test_an_output_under_a_file_says_the_file_is_not_a_folder(tmp_path, images):
    _is_one_line_error(
        _classify(images[0], "-o", images[1] / "x.jsonl", "--exist-ok"), f"{images[1]} is a file, not a folder"
    )
    _is_one_line_error(
        _classify(images[0], "--save-dir", images[1], "--exist-ok"), f"{images[1]}: is a file, not a folder"
    )


# -- exclusive writes --------------------------------------------------------------------------


def _rec(path: str = "a.png", score: float = 0.5) -> Record:
    return Record(
        path=path,
        task="classify",
        model="m",
        width=4,
        height=3,
        time_ms=1.0,
        predictions=[{"label": "x", "class_id": 0, "score": score}],
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_file_that_appears_during_the_run_is_not_replaced(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    writer = RecordWriter(fmt, str(out))
    writer.write(_rec())
    out.write_text("someone else's file")  # created while the run was going
    with pytest.raises(CnnkitError, match="appeared during the run"):
        writer.close()
    assert out.read_text() == "someone else's file"
    assert "a.png" in Path(f"{out}.1").read_text()  # the records are kept beside it


def test_atomic_path_without_overwrite_never_replaces(tmp_path):
    target = tmp_path / "t.txt"
    with pytest.raises(CnnkitError, match="already exists"), atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")
    assert target.read_text() == "theirs"
    assert sorted(os.listdir(tmp_path)) == ["t.txt"]


def test_atomic_path_without_hard_links_still_refuses(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "t.txt"
    with atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    other = tmp_path / "u.txt"
    with pytest.raises(CnnkitError, match="already exists"), atomic_path(other, overwrite=False) as tmp:
        tmp.write_text("second")
        other.write_text("theirs")
    assert other.read_text() == "theirs"
    assert sorted(os.listdir(tmp_path)) == ["t.txt", "u.txt"]


# -- picture names -----------------------------------------------------------------------------


def test_same_file_name_in_two_folders_gets_two_pictures_across_runs(tmp_path):
    a = _png(tmp_path / "a" / "img.png", 20, 30)
    b = _png(tmp_path / "b" / "img.png", 26, 18, 200)
    pics = tmp_path / "pics"
    saved = []
    for src in (a, b, a):  # separate runs (resumes, shards) sharing one --save-dir
        result = _classify(src, "--save-dir", pics, "--exist-ok", "-f", "jsonl")
        assert result.exit_code == 0, result.output
        saved.append(json.loads(result.stdout)["saved"])
    assert saved[0] == saved[2] != saved[1]  # stable per input, different between inputs
    assert len(list(pics.iterdir())) == 2
    assert Image.open(saved[0]).size == (30, 20) and Image.open(saved[1]).size == (18, 26)


def test_pictures_never_overwrite_an_input(tmp_path):
    folder = tmp_path / "photos"
    keep = {p: p.read_bytes() for p in (_png(folder / "img.jpg"), _png(folder / "img.png", value=90))}
    result = _classify(folder, "--save-dir", folder, "--exist-ok", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in keep} == keep
    # a rerun sees the first run's pictures as inputs; img.png's picture name is one of them
    result = _classify(folder, "--save-dir", folder, "--exist-ok", "-f", "jsonl")
    _is_one_line_error(result, "is one of the inputs")
    assert {p: p.read_bytes() for p in keep} == keep


# -- full disks, read-only folders, folders named as files -------------------------------------


def test_full_disk_during_jsonl_keeps_whole_lines(tmp_path, images, monkeypatch):
    real = writers._write_all
    calls = []

    def fill_up(fh, data):
        calls.append(data)
        if len(calls) == 3:
            real(fh, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(writers, "_write_all", fill_up)
    out = tmp_path / "out.jsonl"
    result = _classify(*images, "-o", out)
    _is_one_line_error(result, f"{out}: write failed (No space left on device)")
    assert [r["path"] for r in _records(out)] == [str(images[0]), str(images[1])]


def test_full_disk_while_saving_pictures(tmp_path, images, monkeypatch):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out, pics = tmp_path / "out.jsonl", tmp_path / "pics"
    result = _classify(*images, "-o", out, "--save-dir", pics)
    _is_one_line_error(result, "cannot write (No space left on device)")
    assert str(pics) in result.stderr
    assert _records(out) == [] and list(pics.iterdir()) == []  # no half pictures, no temporaries


def test_save_in_a_read_only_folder(tmp_path, images, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.chdir(ro)
    if os.geteuid() == 0:  # root writes through mode bits: refuse the way the kernel would
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *args, **kwargs):
            if Path(os.path.abspath(self)).is_relative_to(ro):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    try:
        result = _classify(images[0], "--save", "-f", "jsonl")
    finally:
        ro.chmod(0o755)
    _is_one_line_error(result, "cannot create folder (Permission denied)")


@pytest.mark.parametrize("extra", [[], ["--exist-ok"]])
def test_output_naming_a_folder(tmp_path, images, extra):
    folder = tmp_path / "results"
    folder.mkdir()
    _is_one_line_error(_classify(images[0], "-o", folder, "-f", "json", *extra), "is a folder")
    assert list(folder.iterdir()) == []


# -- NaN and stdout ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "coco"])
def test_non_finite_numbers_are_written_as_null(tmp_path, fmt):
    from cnnkit.eval.coco import CocoResults

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("cnnkit").addHandler(handler)

    out = tmp_path / f"out.{fmt}"
    rec = _rec(score=float("nan"))
    rec.predictions[0].update(class_id=0, box=[0.0, 0.0, float("inf"), 1.0])
    rec.time_ms = float("-inf")
    writer = RecordWriter(fmt, str(out), coco_builder=CocoResults() if fmt == "coco" else None)
    again = _rec("b.png", score=float("nan"))
    again.predictions[0].update(class_id=0, box=[0.0, 0.0, 1.0, 1.0])
    writer.write(rec)
    writer.write(again)
    try:
        writer.close()
    finally:
        logging.getLogger("cnnkit").removeHandler(handler)
    text = out.read_text()
    if fmt == "jsonl":
        assert _records(out)[0]["predictions"][0]["score"] is None
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [row["score"] for row in rows] == ["", ""] and rows[0]["x2"] == "" and rows[0]["time_ms"] == ""
    else:
        data = _strict_json(text)
        assert (data[0]["predictions"][0]["score"] if fmt == "json" else data[0]["score"]) is None
    assert "NaN" not in text and "Infinity" not in text and "nan" not in text
    assert len([w for w in warnings if "NaN or infinite" in w]) == 1  # said once, not per record


def test_nan_model_output_through_the_cli(tmp_path, images):
    import torch

    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.nets import ShapesNet

    net = ShapesNet(num_classes=2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    ckpt = save_checkpoint(
        tmp_path / "nan.safetensors",
        net,
        {
            "task": "classify",
            "arch": "shapes_cnn",
            "labels": ["yes", "no"],
            "name": "nan",
            "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
        },
    )
    result = _classify(images[0], "-w", ckpt, "-f", "json")
    assert result.exit_code == 0, result.output
    rec = _strict_json(result.stdout)[0]
    assert [p["score"] for p in rec["predictions"]] == [None, None]
    assert "NaN or infinite" in result.stderr
    # cnnkit's own readers take the nulls it writes: the live report (a traceback in its score histogram, exit 1),
    # the report of the file ("not records", then "no records"), and convert (exit 0 with nothing written)
    out, page = tmp_path / "nan.jsonl", tmp_path / "live.html"
    live = _classify(images[0], "-w", ckpt, "-o", out, "--report", page)
    assert live.exit_code == 0 and page.is_file(), live.output
    later = CliRunner().invoke(app, ["report", str(out), "-o", str(tmp_path / "again.html")])
    assert later.exit_code == 0 and "not records" not in later.stderr, later.output
    handed = CliRunner().invoke(app, ["convert", str(out), "labelstudio", "-o", str(tmp_path / "ls.json")])
    assert handed.exit_code == 0, handed.output
    (task,) = json.loads((tmp_path / "ls.json").read_text())
    assert task["predictions"][0]["result"][0]["value"]["choices"] == ["yes"]


def _records_file(tmp_path: Path, image: Path, predictions: list[dict], task: str = "detect") -> Path:
    """One successful record of a 32×24 ``image`` with these ``predictions``, as a JSON Lines file."""
    record = {"path": str(image), "task": task, "model": "m", "width": 32, "height": 24, "time_ms": 1.0}
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({**record, "error": None, "schema_version": 3, "predictions": predictions}) + "\n")
    return records


def test_boxes_with_null_or_impossible_coordinates_are_left_out_of_pictures_and_hand_offs(tmp_path, images):
    """A box written with null coordinates (the model's NaN) or edited to corners the wrong way round or past any
    picture was a traceback in `cnnkit report` (a null score too) and in `convert`: such boxes are left out."""
    good = {"label": "a", "class_id": 0, "score": 0.9, "box": [2, 3, 20, 15]}
    bad = [
        {"label": "b", "class_id": 1, "score": None, "box": [None, 1, 2, 3]},
        {"label": "c", "class_id": 1, "score": 0.5, "box": [-1e308, 1e308, 1e308, -1e308]},
        {"label": "d", "class_id": 1, "score": 0.5, "box": [-1e308, -1e308, 1e308, 1e308]},
    ]
    records = _records_file(tmp_path, images[0], [good, {**good, "score": None}, *bad])
    page = CliRunner().invoke(app, ["report", str(records), "-o", str(tmp_path / "r.html")])
    assert page.exit_code == 0 and (tmp_path / "r.html").is_file(), page.output
    for fmt, out in (("voc", "voc"), ("cvat", "c.xml"), ("labelstudio", "ls.json")):
        handed = CliRunner().invoke(app, ["convert", str(records), fmt, "-o", str(tmp_path / out)])
        assert handed.exit_code == 0 and "3 prediction(s) left out" in handed.stderr, (fmt, handed.output)
    (task,) = json.loads((tmp_path / "ls.json").read_text())
    assert [r["score"] for r in task["predictions"][0]["result"]] == [0.9, None]


def test_convert_to_voc_refuses_an_existing_file_before_writing_any(tmp_path, images):
    """`convert … voc -o DIR` wrote Annotations/ and ImageSets/ into the folder, then refused its labelmap.txt."""
    records = _records_file(tmp_path, images[0], [{"label": "a", "class_id": 0, "score": 0.9, "box": [2, 3, 20, 15]}])
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "labelmap.txt").write_text("mine\n")
    refused = CliRunner().invoke(app, ["convert", str(records), "voc", "-o", str(tmp_path / "voc")])
    assert refused.exit_code == 1 and "labelmap.txt: already exists" in refused.output
    assert sorted(p.name for p in (tmp_path / "voc").rglob("*")) == ["labelmap.txt"]
    assert (tmp_path / "voc" / "labelmap.txt").read_text() == "mine\n"


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_output_to_a_fifo_is_written_through_not_replaced(tmp_path, images, fmt):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the writer's open does not block
    try:
        result = _classify(images[0], "-o", fifo, "-f", fmt, "--exist-ok")
        assert result.exit_code == 0, result.output
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the pipe, not a file put in its place
        text = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    rows = _strict_json(text) if fmt == "json" else list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["path"] == str(images[0])


def test_dash_output_is_stdout(tmp_path, images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _classify(*images[:2], "-o", "-")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["path"] for x in result.stdout.splitlines()] == [str(images[0]), str(images[1])]
    assert not (tmp_path / "-").exists()
    result = _classify(images[0], "-o", "-", "-f", "json")
    assert result.exit_code == 0 and _strict_json(result.stdout)[0]["path"] == str(images[0])
    assert not (tmp_path / "-").exists()


def test_a_run_whose_every_input_failed_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = _classify("bad.png", "--save")
    assert result.exit_code == 1
    assert not (tmp_path / "runs" / "classify" / "exp").exists()
    result = runner.invoke(app, ["explain", "bad.png"])
    assert result.exit_code == 1 and not (tmp_path / "runs" / "explain" / "exp").exists()
    _png(tmp_path / "good.png")
    assert _classify("good.png", "--save").exit_code == 0
    assert len(list((tmp_path / "runs" / "classify" / "exp").iterdir())) == 1  # the next run is exp again


def test_a_mask_whose_size_is_not_the_images_is_not_decoded(tmp_path, images):
    """An instance record's RLE says its own size: `{"size": [50000, 50000], "counts": "0"}` in a 32×24 image's
    record made `cnnkit report` and `convert` decode 2.5 gigapixels (7 GB) from a few bytes."""
    import tracemalloc

    from cnnkit.results import encode_rle

    mask = np.zeros((24, 32), bool)
    mask[4:12, 6:20] = True
    good = {"label": "a", "class_id": 0, "score": 0.9, "box": [6, 4, 20, 12], "mask": encode_rle(mask)}
    bomb = {**good, "label": "b", "mask": {"size": [50000, 50000], "counts": "0"}}
    records = _records_file(tmp_path, images[0], [good, bomb], task="instance")
    tracemalloc.start()
    try:
        page = CliRunner().invoke(app, ["report", str(records), "-o", str(tmp_path / "r.html")])
        handed = CliRunner().invoke(app, ["convert", str(records), "cvat", "-o", str(tmp_path / "c.xml")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert page.exit_code == 0 and handed.exit_code == 0, (page.output, handed.output)
    assert "1 prediction(s) left out" in handed.stderr and peak < 256 << 20
    xml = (tmp_path / "c.xml").read_text()
    assert 'label="a"' in xml and 'label="b"' not in xml.split("<image", 1)[1]
