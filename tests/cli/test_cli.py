"""The CLI shell: help without torch, version, info, models, data commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cnnkit import __version__
from cnnkit.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom cnnkit.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['classify', '--help'])\nassert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'torchvision', 'ultralytics', 'segmentation_models_pytorch', 'numpy') if m in sys.modules]\n"
        "print(heavy)\nassert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cnnkit {__version__}"
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "--version"], capture_output=True, text=True)
    assert proc.stdout.strip() == f"cnnkit {__version__}"


def test_info_json():
    result = runner.invoke(app, ["info", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cnnkit"] == __version__ and "cpu" in data["devices"]
    assert "shapes-cnn" in data["bundled"]
    assert data["caches"]["torch_hub"].startswith(str(__import__("os").environ["TORCH_HOME"]))
    cache = __import__("os").environ["CNNKIT_CACHE"]
    assert data["caches"]["runtimes"] == f"{cache}/runtimes" and data["caches"]["openvino"] == f"{cache}/openvino"
    assert data["caches"]["cnnkit"] == cache and data["caches"]["ultralytics_weights"] == f"{cache}/ultralytics/weights"
    assert data["cached_pretrained"] == []


def test_info_table():
    result = runner.invoke(app, ["info", "--format", "table"])
    assert result.exit_code == 0 and "torch_hub" in result.stdout


def test_models_lists_registry_with_real_parameter_counts():
    result = runner.invoke(app, ["models", "--task", "classify", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["shapes-cnn"]["available"] is True and rows["shapes-cnn"]["source"] == "bundled"
    assert rows["resnet18"]["parameters"] == 11_689_512
    assert rows["resnet18"]["available"] is False
    assert rows["resnet18"]["imagenet_top1"] == pytest.approx(69.758)
    assert all(r["task"] == "classify" for r in rows.values())


def test_models_pattern_and_table():
    result = runner.invoke(app, ["models", "resnet*", "--format", "table"])
    assert result.exit_code == 0 and "resnet50" in result.stdout and "vgg16" not in result.stdout


def test_unknown_command_is_usage_error():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_data_shapes_and_digits(tmp_path):
    out = tmp_path / "yolo"
    result = runner.invoke(app, ["data", "shapes", str(out), "--layout", "yolo", "--n", "5", "--imgsz", "64"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["train"] == 4
    assert (out / "data.yaml").exists()
    again = runner.invoke(app, ["data", "shapes", str(out), "--n", "5"])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = runner.invoke(app, ["data", "shapes", str(tmp_path / "x"), "--format", "voc"])
    assert bad.exit_code == 2
    digits = runner.invoke(app, ["data", "digits", str(tmp_path / "digits")])
    assert digits.exit_code == 0
    summary = json.loads(digits.stdout)
    assert summary["train"] + summary["val"] == 1797


def test_data_into_a_folder_that_holds_files_says_they_stay(tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    out = tmp_path / "ds"
    runner = CliRunner()
    assert runner.invoke(app, ["data", "shapes", str(out), "--n", "4", "--imgsz", "32"]).exit_code == 0
    again = runner.invoke(app, ["data", "shapes", str(out), "--n", "2", "--imgsz", "32", "--exist-ok"])
    assert again.exit_code == 0 and "already holds files" in again.output


def test_models_with_an_unknown_task_is_a_usage_error():
    from typer.testing import CliRunner

    from cnnkit.cli import app

    result = CliRunner().invoke(app, ["models", "--task", "foo"])
    assert result.exit_code == 2 and "unknown task 'foo'" in result.output


def test_output_choices_that_cannot_work_are_refused_before_the_model_loads(tmp_path, monkeypatch):
    """Parquet to stdout, --format coco for classify, a model file or a hand-off file to `-`: one usage line, no
    model loaded and no file named `-` (export and convert wrote one)."""
    from cnnkit import api

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api, "load", lambda *a, **k: pytest.fail("the model loaded before a usage error"))
    image = str(REPO / "samples" / "shape_0_triangle.png")
    for args, said in (
        (["classify", image, "-f", "parquet"], "Parquet records are written to a file"),
        (["classify", image, "-f", "coco"], "--format coco: is for detect and instance"),
        (["export", "shapes-cnn", "-o", "-"], "a model is written to a file, not to stdout"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and said in result.output, result.output
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"path": image, "task": "detect", "predictions": []}) + "\n")
    for to in ("cvat", "labelstudio"):
        result = runner.invoke(app, ["convert", str(records), to, "-o", "-"])
        assert result.exit_code == 2 and "not to stdout" in result.output
    result = runner.invoke(app, ["report", str(records), "-o", "-"])  # it named --report, a flag report lacks
    assert result.exit_code == 2 and "--output -: a report is an .html file" in result.output
    assert not (tmp_path / "-").exists()


def test_info_and_models_answer_for_every_task():
    """`info` names each task's default model (four were null), `models --task track` lists what track runs (was
    empty), and every `models` row has the same keys."""
    from cnnkit.tasks import TASKS

    info = json.loads(runner.invoke(app, ["info", "-f", "json"]).stdout)
    assert {k: v["value"] for k, v in info["settings"].items() if k.startswith("model.")} == {
        f"model.{name}": row.default_model for name, row in TASKS.items()
    }
    track = json.loads(runner.invoke(app, ["models", "--task", "track", "-f", "json"]).stdout)
    assert {r["task"] for r in track} == {"detect", "instance"} and "shapes-yolov8n" in {r["name"] for r in track}
    rows = json.loads(runner.invoke(app, ["models", "-f", "json"]).stdout)
    assert len({tuple(sorted(r)) for r in rows}) == 1


def test_a_usage_error_names_the_command_as_typed_not_its_hidden_predict():
    result = runner.invoke(app, ["classify", "--topk", "x", "samples"])
    assert result.exit_code == 2
    assert "Usage: cnnkit classify [OPTIONS]" in result.output and "Try 'cnnkit classify -h'" in result.output
    assert "predict" not in result.output
    named = runner.invoke(app, ["detect", "val", "--bogus"])
    assert named.exit_code == 2 and "Usage: cnnkit detect val [OPTIONS]" in named.output


def test_a_log_file_gets_a_progress_line_now_and_then(monkeypatch):
    """No live bar off a terminal (nohup, Slurm): a plain line every HEARTBEAT_S says the job is alive."""
    from cnnkit.cli import common

    monkeypatch.setattr(common, "HEARTBEAT_S", 0.0)
    samples = [str(REPO / "samples" / n) for n in ("shape_0_triangle.png", "shape_1_circle.png")]
    result = runner.invoke(app, ["classify", *samples, "-f", "jsonl", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert "1/2 done, 0 failed" in result.stderr and "2/2 done, 0 failed" in result.stderr
    quiet = runner.invoke(app, ["-q", "classify", *samples, "-f", "jsonl", "--backend", "torch"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_models_that_match_nothing_say_so():
    """`cnnkit models 'RESNET*'` printed an empty table and nothing else (names are lower case, matched as timm's)."""
    result = runner.invoke(app, ["models", "RESNET*", "-f", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "no model matches 'RESNET*'" in result.stderr


def test_ultralytics_key_value_arguments_are_a_usage_error_naming_the_flag():
    """`cnnkit detect source=img.jpg conf=0.5` read each as a missing image and ran the defaults (exit 1)."""
    result = runner.invoke(app, ["detect", "samples/bus.jpg", "conf=0.5"])
    assert (
        result.exit_code == 2 and "conf=0.5: ultralytics' key=value" in result.stderr and "--conf 0.5" in result.stderr
    )
    result = runner.invoke(app, ["detect", "source=samples/bus.jpg"])
    assert result.exit_code == 2 and "the source itself, samples/bus.jpg" in result.stderr


def test_an_error_naming_a_path_with_a_newline_is_one_line(tmp_path, monkeypatch):
    """`Error:` lines printed a user's path raw: a name holding a newline broke the error into two lines."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ex\nist"
    out.mkdir()
    result = runner.invoke(app, ["data", "shapes", str(out), "--n", "5"])
    assert result.exit_code == 1
    (line,) = [s for s in result.stderr.splitlines() if s.startswith("Error:")]
    assert "ex\\nist" in line and "already exists" in line


def test_a_fifo_named_as_onnx_weights_is_refused_not_read(tmp_path, monkeypatch):
    """With the default backend an ONNX file's graph was read before the path was checked, so a FIFO named
    ``x.onnx`` blocked the command for good; it is refused in one line."""
    import os

    monkeypatch.chdir(tmp_path)
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    (tmp_path / "a.png").write_bytes((REPO / "samples" / "shape_1_circle.png").read_bytes())
    result = runner.invoke(app, ["classify", "a.png", "--weights", str(fifo)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "fifo.onnx: not a regular file" in result.stderr


def test_save_exist_ok_keeps_an_empty_run_folder_that_was_there_before(tmp_path, monkeypatch):
    """Only a run folder this run made is removed when every input failed; `--save --exist-ok` removed the
    user's own empty runs/classify/exp."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "classify" / "exp").mkdir(parents=True)
    (tmp_path / "bad.jpg").write_bytes(b"")
    result = runner.invoke(app, ["classify", "bad.jpg", "--save", "--exist-ok", "-f", "jsonl"])
    assert result.exit_code == 1 and (tmp_path / "runs" / "classify" / "exp").is_dir()
    result = runner.invoke(app, ["classify", "bad.jpg", "--save", "-f", "jsonl"])
    assert result.exit_code == 1 and not (tmp_path / "runs" / "classify" / "exp2").exists()
