"""The record writers and the schema on their own: bytes written per format, old files read back."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest

from cnnkit.errors import OptionError
from cnnkit.eval.coco import CocoResults
from cnnkit.io.writers import RecordWriter, csv_rows, path_key, tidy_jsonl
from cnnkit.records import SCHEMA_VERSION, Record, validate_record
from cnnkit.results import Box, Boxes, Classes, ClassScore


def classify_record(path: str = "a.png") -> Record:
    result = Classes([ClassScore("triangle", 2, 0.9607), ClassScore("circle", 0, 0.03)])
    return Record(path, "classify", "shapes-cnn", 128, 96, result.predictions(), 32.21234, result=result)


def detect_record(path: str = "s.png") -> Record:
    result = Boxes([Box("star", 3, 0.91, (1.5, 2.0, 30.25, 40.0))], 64, 48)
    return Record(path, "detect", "shapes-yolov8n", 64, 48, result.predictions(), 5.0, result=result)


def write(fmt: str, records: list[Record], **kwargs) -> str:
    out = io.StringIO()
    writer = RecordWriter(fmt, stream=out, **kwargs)
    for r in records:
        writer.write(r)
    writer.close()
    return out.getvalue()


def test_jsonl_line_is_the_documented_schema():
    line = write("jsonl", [classify_record()])
    assert line == (
        '{"path": "a.png", "task": "classify", "model": "shapes-cnn", "width": 128, "height": 96, '
        '"predictions": [{"label": "triangle", "class_id": 2, "score": 0.9607}, '
        '{"label": "circle", "class_id": 0, "score": 0.03}], "time_ms": 32.212, "error": null, '
        f'"schema_version": {SCHEMA_VERSION}}}\n'
    )
    validate_record(json.loads(line))


def test_extras_follow_the_schema_keys_and_failures_validate():
    rec = detect_record()
    rec.extra["saved"] = "out/s-1234abcd.jpg"
    failed = Record.failed("gone.png", "detect", "shapes-yolov8n", "no such file")
    lines = [json.loads(x) for x in write("jsonl", [rec, failed]).splitlines()]
    assert list(lines[0])[-2:] == ["schema_version", "saved"]
    assert lines[0]["predictions"] == [{"label": "star", "class_id": 3, "score": 0.91, "box": [1.5, 2.0, 30.25, 40.0]}]
    assert lines[1]["error"] == "no such file" and lines[1]["predictions"] == []
    for data in lines:
        validate_record(data)


def test_written_record_is_a_copy_without_the_typed_result():
    rec = classify_record()
    data = rec.to_dict()
    assert "result" not in data
    data["predictions"][0]["label"] = "changed"
    assert rec.predictions[0]["label"] == "triangle"


def test_csv_one_row_per_prediction_with_box_columns():
    text = write("csv", [classify_record(), detect_record(), Record.failed("x.png", "detect", "m", "bad")])
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0]
    assert header.startswith("path,task,model,width,height,time_ms,error,schema_version,rank,label,class_id,score")
    assert [r["path"] for r in rows] == ["a.png", "a.png", "s.png", "x.png"]
    assert rows[0]["class_id"] == "2" and rows[0]["rank"] == "0" and rows[1]["rank"] == "1"
    assert (rows[2]["x1"], rows[2]["y2"]) == ("1.5", "40.0")
    assert rows[3]["error"] == "bad" and rows[3]["rank"] == "" and rows[3]["schema_version"] == str(SCHEMA_VERSION)
    assert csv_rows({"path": "old.png", "predictions": [{"label": "a", "index": 1, "score": 0.5}]})[0]["index"] == 1


def test_json_is_one_array_and_table_is_for_people():
    records = [classify_record(), detect_record()]
    data = json.loads(write("json", records))
    assert [d["path"] for d in data] == ["a.png", "s.png"] and all(d["schema_version"] == SCHEMA_VERSION for d in data)
    table = write("table", records)
    assert "triangle 0.96" in table and "128x96" in table and "star 0.91" in table


def test_coco_results_from_records():
    text = write(
        "coco", [detect_record(), Record.failed("x.png", "detect", "m", "bad")], coco_builder=CocoResults({"s.png": 7})
    )
    assert json.loads(text) == [{"image_id": 7, "category_id": 4, "bbox": [1.5, 2.0, 28.75, 38.0], "score": 0.91}]


def test_coco_ids_of_two_files_of_one_name_in_other_folders_differ():
    """`detect scene.png sub/scene.png -f coco` gave both id 1: the id made for `scene.png` was found again by
    `sub/scene.png`'s file name, a lookup meant for a ground truth that names its images by file name only."""
    records = [detect_record("scene.png"), detect_record("sub/scene.png"), detect_record("scene.png")]
    items = json.loads(write("coco", records, coco_builder=CocoResults()))
    assert [(i["image_id"], i["file_name"]) for i in items] == [
        (1, "scene.png"),
        (2, "sub/scene.png"),
        (1, "scene.png"),
    ]
    by_name = json.loads(write("coco", records[:2], coco_builder=CocoResults({"scene.png": 7})))
    assert [i["image_id"] for i in by_name] == [7, 7]  # the ground truth's file name matches in any folder


def test_validate_accepts_both_schema_versions_and_refuses_mixtures():
    new = classify_record().to_dict()
    validate_record(new)
    old = {k: v for k, v in new.items() if k != "schema_version"}
    old["predictions"] = [
        {"label": p["label"], "index": p["class_id"], "score": p["score"]} for p in new["predictions"]
    ]
    validate_record(old)  # a version-1 line from an older file
    with pytest.raises(ValueError, match="class_id"):
        validate_record({**old, "schema_version": 2})
    with pytest.raises(ValueError, match="classify prediction keys"):
        validate_record({**new, "schema_version": 1})
    validate_record({**new, "schema_version": 2})  # version 2 lines (before video frames) still read
    for bad in (4, "2", True, None):
        with pytest.raises(ValueError, match="schema_version"):
            validate_record({**new, "schema_version": bad})
    validate_record({**new, "frame": 3, "time_s": 0.12})  # version 3: a video frame's record
    with pytest.raises(ValueError, match="frame"):
        validate_record({**new, "frame": -1, "time_s": 0.0})


def test_resume_of_a_file_written_before_schema_version(tmp_path):
    out = tmp_path / "old.jsonl"
    old_lines = [
        (
            '{"path": "a.png", "task": "classify", "model": "shapes-cnn", "width": 128, "height": 96, '
            '"predictions": [{"label": "triangle", "index": 2, "score": 0.9607}], "time_ms": 32.2, "error": null}\n'
        ),
        (
            '{"path": "b.png", "task": "classify", "model": "shapes-cnn", "width": null, "height": null, '
            '"predictions": [], "time_ms": null, "error": "no such file"}\n'
        ),
    ]
    out.write_text("".join(old_lines))
    resume = tidy_jsonl(out)
    assert resume.done == {path_key("a.png")} and resume.known == {path_key("a.png"), path_key("b.png")}
    writer = RecordWriter("jsonl", str(out), append=True, resume=resume)
    writer.write(classify_record("b.png"))  # the failed one, retried
    writer.close()
    lines = out.read_text().splitlines(keepends=True)
    assert lines[0] == old_lines[0]  # the old record stays byte for byte
    assert len(lines) == 2 and json.loads(lines[1])["schema_version"] == SCHEMA_VERSION
    for line in lines:
        validate_record(json.loads(line))


def test_coco_records_without_a_builder_are_an_option_error() -> None:
    """Classify and segment records have no COCO form: a usage error naming the format, not a crash."""
    with pytest.raises(OptionError) as err:
        RecordWriter("coco", None)
    assert "fmt" in err.value.options and "detect and instance" in str(err.value)


def test_csv_rows_of_a_tracked_frame_carry_the_running_counts():
    rec = {"path": "v.mp4", "frame": 7, "time_s": 0.28, "counts": {"in": 2, "out": 1}, "predictions": [{"label": "a"}]}
    (row,) = csv_rows(rec)
    assert (row["frame"], row["count_in"], row["count_out"]) == (7, 2, 1)


def test_table_shows_names_with_markup_as_names():
    """A file named like rich markup (``d[/b].png``, ``[bold]x.png``) is a name in the table, not a tag."""
    from cnnkit.io.writers import render_table

    rows = [
        {
            "path": "d[/b].png",
            "width": 4,
            "height": 3,
            "predictions": [{"label": "[red]a", "score": 0.5}],
            "time_ms": 1.0,
        },
        {"path": "[bold]x\n.png", "error": "cannot read [/x]", "predictions": []},
    ]
    text = render_table(rows)
    assert "d[/b].png" in text and "[red]a 0.50" in text and "[bold]x\\n.png" in text and "cannot read [/x]" in text


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_skip_existing_refuses_another_tasks_or_models_file(suffix, tmp_path, rgb_image):
    """Resuming a file of another task or model would skip every input as done and mix two runs."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    out = tmp_path / f"m{suffix}"
    runner = CliRunner()
    assert runner.invoke(app, ["classify", str(rgb_image), "-o", str(out), "-m", "lenet5"]).exit_code == 0
    before = out.read_bytes()
    for args, said in ((["detect"], "not detect"), (["classify", "-m", "shapes-cnn"], "not classify with shapes-cnn")):
        result = runner.invoke(app, [*args, str(rgb_image), "-o", str(out), "--skip-existing"])
        assert result.exit_code == 2 and f"holds classify records of lenet5, {said}" in result.output
    assert out.read_bytes() == before
    same = runner.invoke(app, ["classify", str(rgb_image), "-o", str(out), "-m", "lenet5", "--skip-existing"])
    assert same.exit_code == 0


def test_coco_ids_without_ground_truth_are_places_in_the_output_and_name_their_file():
    """Each image and each video frame its own id, failed inputs counted, so ids do not shift; a reader maps an
    id back to its file (and frame) from the result itself."""
    frames = [replace(detect_record(), path="clip.mp4", frame=k) for k in (0, 1)]
    records = [detect_record(), Record.failed("x.png", "detect", "m", "bad"), replace(detect_record(), path="t.png")]
    items = json.loads(write("coco", [*records, *frames], coco_builder=CocoResults()))
    assert [(i["image_id"], i["file_name"], i.get("frame")) for i in items] == [
        (1, "s.png", None),
        (3, "t.png", None),
        (4, "clip.mp4", 0),
        (5, "clip.mp4", 1),
    ]


def test_a_table_shows_control_characters_in_labels_escaped_on_their_row():
    """A model's label (an ultralytics .pt's names) with a clear-screen sequence or a line break reached the
    terminal raw and split a row."""
    result = Classes([ClassScore("\x1b[2Jevil", 0, 0.9), ClassScore("two\nlines", 1, 0.1)])
    record = Record("a.png", "classify", "m", 8, 8, result.predictions(), 1.0, result=result)
    table = write("table", [record])
    assert "\x1b" not in table and "\\x1b[2Jevil" in table and "two\\nlines" in table


def test_csv_columns_do_not_depend_on_which_input_came_first_or_what_was_found():
    """Two shards of one job gave CSVs with other columns: frame/time_s moved with the first input's kind,
    and with nothing detected the label, score and box columns were missing."""
    frame = detect_record("v.mp4")
    frame.frame, frame.time_s = 0, 0.0
    nothing = Record("e.png", "detect", "shapes-yolov8n", 64, 48, [], 5.0)
    heads = [write("csv", recs).splitlines()[0] for recs in ([detect_record(), frame], [frame, detect_record()])]
    assert heads[0] == heads[1] and heads[0].endswith(",rank,label,class_id,score,x1,y1,x2,y2,frame,time_s")
    assert write("csv", [nothing]).splitlines()[0].endswith(",rank,label,class_id,score,x1,y1,x2,y2")


def test_csv_keeps_the_files_a_record_names():
    """The README says CSV repeats the record's keys: `saved`, `label_file` and `crops` were left out."""
    rec = detect_record()
    rec.extra.update(saved="runs/detect/exp/s-1.jpg", label_file="runs/detect/exp/labels/s-1.txt")
    rows = list(csv.DictReader(io.StringIO(write("csv", [rec]))))
    assert rows[0]["saved"] == "runs/detect/exp/s-1.jpg" and rows[0]["label_file"].endswith("s-1.txt")


def test_a_video_that_failed_to_open_and_was_read_since_keeps_only_its_frames(tmp_path):
    """`--skip-existing` kept the whole-video failure beside the frames of every later, successful run."""
    out = tmp_path / "r.jsonl"
    lines = [
        Record.failed("v.mp4", "detect", "m", "cannot open video (Invalid data)"),
        Record("v.mp4", "detect", "m", 8, 8, [], 1.0, frame=0, time_s=0.0),
        Record("v.mp4", "detect", "m", 8, 8, [], 1.0, frame=1, time_s=0.1),
    ]
    out.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in lines))
    resume = tidy_jsonl(out)
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r.get("frame") for r in kept] == [0, 1] and all(r["error"] is None for r in kept)
    assert len(resume.known) == 2


def test_output_through_a_symbolic_link_writes_its_target(tmp_path):
    """An --output the user named as a link: the rename replaced the link with a file, and the file the link
    names (the one the user keeps) stayed stale, for CSV with --exist-ok and for a resumed JSON Lines file."""
    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "res.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    writer = RecordWriter("csv", str(link), exist_ok=True)
    writer.write(detect_record())
    writer.close()
    assert link.is_symlink() and target.read_text().startswith("path,task")
    lines = [Record.failed("s.png", "detect", "m", "bad"), detect_record()]
    jsonl, jlink = tmp_path / "real" / "res.jsonl", tmp_path / "link.jsonl"
    jsonl.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in lines))
    jlink.symlink_to(jsonl)
    tidy_jsonl(jlink)
    assert jlink.is_symlink() and len(jsonl.read_text().splitlines()) == 1


def test_an_existing_output_suggests_resuming_only_where_the_format_resumes(tmp_path):
    """The CSV refusal advised --skip-existing, which CSV then refused."""
    from cnnkit.errors import CnnkitError
    from cnnkit.io.writers import check_output

    for name, fmt, resumes in (("o.csv", "csv", False), ("o.jsonl", "jsonl", True)):
        (tmp_path / name).write_text("x\n")
        with pytest.raises(CnnkitError, match="already exists") as err:
            check_output(str(tmp_path / name), fmt)
        assert ("skip_existing" in str(err.value)) == resumes


def test_the_table_tells_a_videos_frames_apart():
    """Every row of a video read the same path, with no frame or time."""
    frames = [Record("v.mp4", "detect", "m", 8, 8, [], 1.0, frame=i, time_s=i / 25) for i in range(2)]
    text = write("table", frames)
    assert "v.mp4 #0 (0.00 s)" in text and "v.mp4 #1 (0.04 s)" in text


def frame_record(frame: int) -> Record:
    result = Boxes([Box("star", 3, 0.91, (1.5, 2.0, 30.25, 40.0)), Box("ciré", 0, 0.5, (3.0, 4.0, 9.0, 9.5))], 64, 48)
    record = Record("clip\udcff.mp4", "detect", "shapes-yolov8n", 64, 48, result.predictions(), 5.0, result=result)
    return replace(record, frame=frame, time_s=frame / 25)


@pytest.mark.parametrize("fmt", ["json", "csv", "table", "mot"])
def test_whole_file_formats_spool_records_instead_of_holding_them(fmt: str, tmp_path) -> None:
    """A long video's records go to a spool file, not a list: what the writer holds stays the same whether it
    has seen 200 frames or 2,000, and the output is what the records make, in order."""
    import tracemalloc

    from cnnkit.results import TrackedBox, Tracks

    def record(n: int) -> Record:
        if fmt != "mot":
            return frame_record(n)
        result = Tracks([TrackedBox("star", 3, 0.9, (1.0, 2.0, 11.0, 12.0), 7)], 64, 48)
        return replace(Record("v.mp4", "track", "m", 64, 48, result.predictions(), 1.0, result=result), frame=n)

    held = []
    for frames in (200, 2000):
        writer = RecordWriter(fmt, str(tmp_path / f"{frames}.{fmt}"))
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for n in range(frames):
            writer.write(record(n))
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        writer.close()
        held.append(grown)
    assert held[1] < held[0] + 50_000, held  # 1,800 frames more hold (far) under 30 bytes each
    text = (tmp_path / f"2000.{fmt}").read_text(encoding="utf-8")
    if fmt == "json":
        data = [json.loads(json.dumps(record(n).to_dict())) for n in range(2000)]
        expected = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8", "backslashreplace").decode()
        assert text == expected + "\n"
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 4000 and [r["frame"] for r in rows[-2:]] == ["1999", "1999"]
        assert rows[1]["label"] == "ciré" and rows[0]["path"] == "clip\\udcff.mp4"
    elif fmt == "mot":
        assert (
            text.splitlines()[-1] == "2000,7,1.00,2.00,10.00,10.00,0.9000,-1,-1,-1" and len(text.splitlines()) == 2000
        )
    else:
        assert text.count("clip\\udcff.mp4 #") == 2000 and "#1999 (79.96 s)" in text


def test_json_of_no_records_is_an_empty_list_and_a_table_still_has_its_head() -> None:
    assert json.loads(write("json", [])) == []
    assert "path" in write("table", [])


def test_a_csv_of_no_records_has_its_tasks_columns() -> None:
    """An empty shard's CSV had the base columns only, so its header differed from the other shards'."""
    header = write("csv", [], task="detect").splitlines()[0].split(",")
    assert header == next(csv.reader(io.StringIO(write("csv", [detect_record()], task="detect"))))
    assert {"x1", "y1", "x2", "y2", "score"} <= set(header)


def test_mot_rows_leave_out_a_box_the_model_gave_as_nan() -> None:
    """A NaN coordinate or score (null in the record) was a TypeError traceback from the MOT writer."""
    from cnnkit.results import TrackedBox, Tracks

    result = Tracks(
        [
            TrackedBox("star", 3, float("nan"), (1.0, 2.0, 11.0, 12.0), 7),
            TrackedBox("star", 3, 0.5, (float("nan"), 2.0, 11.0, 12.0), 8),
        ],
        64,
        48,
    )
    record = replace(Record("v.mp4", "track", "m", 64, 48, result.predictions(), 1.0, result=result), frame=0)
    assert write("mot", [record]).splitlines() == ["1,7,1.00,2.00,10.00,10.00,-1,-1,-1,-1"]


def test_an_output_suffix_of_no_records_format_is_said(tmp_path, caplog):
    """`-o out.xlsx` wrote JSON Lines into it without a word."""
    from cnnkit.io.writers import resolve_format

    with caplog.at_level("WARNING", logger="cnnkit"):
        assert resolve_format("auto", str(tmp_path / "out.xlsx")) == "jsonl"
        assert resolve_format("auto", str(tmp_path / "out.ndjson")) == "jsonl"
        assert resolve_format("auto", str(tmp_path / "out")) == "jsonl"
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        ".xlsx is no records format cnnkit writes; writing JSON Lines"
    ]


def test_csv_quotes_a_path_holding_a_carriage_return():
    """Python's csv quoted only the characters of its "\\n" line terminator: a file name with a lone "\\r" was
    written bare and read back as two rows, one input split in two."""
    text = write("csv", [classify_record("d/a\rb.png"), classify_record("d/c.png")])
    assert text.endswith("\n") and "\r\n" not in text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["path"] for r in rows] == ["d/a\rb.png"] * 2 + ["d/c.png"] * 2
