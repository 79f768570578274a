"""Parquet output: typed columns for every task's predictions, row groups as records arrive, resume."""

from __future__ import annotations

import json
import os

import pytest

from cnnkit.records import Record

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

RECORDS = [
    Record("a.png", "classify", "m", 4, 3, [{"label": "cat", "class_id": 1, "score": 0.5}], 1.5),
    Record(
        "b.png", "detect", "m", 4, 3, [{"label": "dog", "class_id": 2, "score": 0.25, "box": [0.0, 1.0, 2.5, 3.0]}], 2.0
    ),
    Record(
        "c.png",
        "segment",
        "m",
        4,
        3,
        [{"label": "bg", "class_id": 0, "pixels": 12, "fraction": 1.0}],
        1.0,
        extra={"mask": "out/c_mask.png", "overlay": "out/c_overlay.png"},
    ),
    Record(
        "d.png",
        "instance",
        "m",
        4,
        3,
        [
            {
                "label": "star",
                "class_id": 3,
                "score": 0.9,
                "box": [0.0, 0.0, 1.0, 1.0],
                "mask": {"size": [3, 4], "counts": "0c0"},
                "track_id": 7,
            }
        ],
        3.0,
    ),
    Record.failed("e.png", "classify", "m", "not a recognised image format"),
]


def test_typed_schema_and_round_trip(tmp_path):
    from cnnkit.io.parquet import ParquetWriter, read_records

    out = tmp_path / "r.parquet"
    writer = ParquetWriter(out, row_group=2)
    held = []
    for rec in RECORDS:
        writer.write(rec.to_dict())
        held.append(len(writer.rows))
    assert not out.exists()  # published whole, on close
    writer.close()
    assert max(held) < 2 and writer.row_groups == 3  # never more than a row group in memory
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 5
    schema = pq.read_schema(out)
    assert schema.field("width").type == pa.int32() and schema.field("time_ms").type == pa.float64()
    pred = schema.field("predictions").type.value_type
    assert pred.field("class_id").type == pa.int32() and pred.field("box").type == pa.list_(pa.float64())
    assert pred.field("mask").type == pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
    assert list(read_records(out)) == [r.to_dict() for r in RECORDS]
    frame = pytest.importorskip("pandas").read_parquet(out)
    assert list(frame["path"]) == [r.path for r in RECORDS] and frame["predictions"][1][0]["box"].tolist()[2] == 2.5
    polars = pytest.importorskip("polars").read_parquet(out)
    assert polars["predictions"].list.len().to_list() == [1, 1, 1, 1, 0]


def test_resume_keeps_old_rows_and_redoes_failures(tmp_path, shapes_images):
    """``--skip-existing`` on a Parquet output: done inputs are skipped, failed ones redone, nothing twice."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.parquet import read_records

    out = tmp_path / "r.parquet"
    names = sorted(str(p) for p in shapes_images.iterdir())
    gone = str(tmp_path / "later.png")
    runner = CliRunner()
    base = ["classify", "-m", "shapes-cnn", "-k", "1", "-q", "-o", str(out)]
    first = runner.invoke(app, [*base, *names[:4], gone], catch_exceptions=False)
    assert first.exit_code == 1
    (tmp_path / "later.png").write_bytes((shapes_images / os.path.basename(names[0])).read_bytes())
    again = runner.invoke(app, [*base, *names, gone, "--skip-existing"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    rows = list(read_records(out))
    assert [r["path"] for r in rows] == names[:4] + names[4:] + [gone]
    assert all(r["error"] is None for r in rows)
    fresh = tmp_path / "fresh.jsonl"
    runner.invoke(app, [*base[:-1], str(fresh), *names, gone], catch_exceptions=False)
    expect = [json.loads(line) for line in fresh.read_text().splitlines()]
    assert [{**r, "time_ms": 0} for r in rows] == [{**r, "time_ms": 0} for r in expect]


def test_refusals(tmp_path):
    from cnnkit.errors import CnnkitError, OptionError
    from cnnkit.io.writers import RecordWriter, tidy_output

    with pytest.raises(OptionError, match="output: Parquet records are written to a file"):
        RecordWriter("parquet", None)
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(CnnkitError, match="not a Parquet file of records, so not resumed"):
        tidy_output(tmp_path / "x.parquet", "parquet")
    with pytest.raises(CnnkitError, match="already exists"):
        RecordWriter("auto", str(tmp_path / "x.parquet"))
    writer = RecordWriter("auto", str(tmp_path / "y.parquet"))
    assert writer.fmt == "parquet"
    writer._parquet.abort()
    assert os.listdir(tmp_path) == ["x.parquet"]  # an aborted writer leaves no temporary file


def test_video_frame_records_keep_frame_and_time_as_typed_columns():
    """Schema 3: a video frame's ``frame``/``time_s`` are columns; an image record reads back without them."""
    from cnnkit.io.parquet import from_row, schema, to_row

    frame = {
        "path": "clip.mp4",
        "frame": 7,
        "time_s": 0.28,
        "task": "detect",
        "model": "m",
        "width": 4,
        "height": 3,
        "predictions": [{"label": "star", "class_id": 3, "score": 0.9, "box": [0, 0, 1, 1], "track_id": 2}],
        "time_ms": 1.0,
        "error": None,
        "schema_version": 3,
    }
    image = {k: v for k, v in frame.items() if k not in ("frame", "time_s")}
    assert {"frame", "time_s"} <= set(schema().names)
    assert from_row(to_row(frame)) == frame
    assert from_row(to_row(image)) == image


def test_a_temp_file_a_killed_run_left_is_removed_by_the_next_run(tmp_path):
    """``kill -9`` leaves ``.NAME.parquet.HOST.PID.*.tmp`` (up to a whole run's rows); the next run on this
    machine removes those of processes that are gone, and never another live run's."""
    import socket
    import subprocess
    import sys

    from cnnkit.io.parquet import ParquetWriter

    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".out.parquet.{host}.{gone.stdout.strip()}.abc123.tmp"
    live = tmp_path / f".out.parquet.{host}.{os.getppid()}.def456.tmp"
    other = tmp_path / f".out.parquet.elsewhere.{gone.stdout.strip()}.ghi789.tmp"
    for f in (dead, live, other):
        f.write_bytes(b"rows")
    writer = ParquetWriter(tmp_path / "out.parquet")
    for record in RECORDS:
        writer.write(record.to_dict())
    writer.close()
    assert not dead.exists() and live.exists() and other.exists()
    assert pq.read_table(tmp_path / "out.parquet").num_rows == len(RECORDS)


def test_a_name_near_the_length_limit_is_written_and_its_leftovers_swept(tmp_path):
    """ ".NAME.HOST.PID.XXXXXXXX.tmp" went past the 255-byte name limit for an output named with 160-255 bytes:
    the run failed ("File name too long"). The name is cut in the temp's, the same way each run, so a killed
    run's leftover is still found and removed."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from cnnkit.io.parquet import ParquetWriter

    final = tmp_path / ("p" * 246 + ".parquet")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    prefix = ParquetWriter._prefix(SimpleNamespace(final=final))  # type: ignore[arg-type]
    assert len(os.fsencode(prefix)) < 200
    dead = tmp_path / f"{prefix}{gone.stdout.strip()}.abc123.tmp"
    dead.write_bytes(b"rows")
    writer = ParquetWriter(final)
    for record in RECORDS:
        writer.write(record.to_dict())
    writer.close()
    assert pq.read_table(final).num_rows == len(RECORDS)
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_a_file_name_that_is_not_utf8_is_written_escaped_not_a_lost_row_group(tmp_path):
    """Parquet's strings are UTF-8: the name's lone surrogate was a UnicodeEncodeError traceback, no file."""
    import pyarrow.parquet as pq

    from cnnkit.io.parquet import ParquetWriter

    out = tmp_path / "r.parquet"
    writer = ParquetWriter(out)
    writer.write(Record("bad/x\udcff.png", "classify", "m", 8, 8, [], 1.0).to_dict())
    writer.write(Record("ok.png", "classify", "m", 8, 8, [], 1.0).to_dict())
    writer.close()
    assert pq.read_table(out).column("path").to_pylist() == ["bad/x\\udcff.png", "ok.png"]


def test_a_non_utf8_name_is_done_once_on_resume_and_reads_back_as_json_lines_gives_it(tmp_path, shapes_images):
    """Its row was keyed by the escaped text, never by the name: each `--skip-existing` run did it again and
    added a row."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.parquet import read_records

    folder = tmp_path / "in"
    folder.mkdir()
    first = sorted(shapes_images.iterdir())[0].read_bytes()
    (folder / "ok.png").write_bytes(first)
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/x\xff.png")
    with open(os.fsencode(odd), "wb") as f:
        f.write(first)
    out = tmp_path / "r.parquet"
    runner = CliRunner()
    for _ in range(3):
        result = runner.invoke(app, ["classify", str(folder), "-k", "1", "-q", "-o", str(out), "--skip-existing"])
        assert result.exit_code == 0, result.output
    assert sorted(r["path"] for r in read_records(out)) == sorted([str(folder / "ok.png"), odd])
