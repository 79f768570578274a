"""The bundled classifier, the classify task through the API and the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data.shapes import CLASSES, classification_sample
from cnnkit.records import validate_record
from tests.conftest import REPO, SAMPLES

runner = CliRunner()


def test_bundled_model_accuracy_on_unseen_seed():
    """≥ 97 % top-1 on 300 fresh images from seed 123 (training used seeds 0 and 1)."""
    samples = [classification_sample(123, i, size=64) for i in range(300)]
    records = cnnkit.classify([img for img, _ in samples], topk=1, batch_size=64)
    correct = sum(r.predictions[0]["label"] == CLASSES[y] for r, (_, y) in zip(records, samples))
    assert correct / len(samples) >= 0.97


def test_api_records_follow_schema(shapes_images):
    records = cnnkit.classify(str(shapes_images), topk=3)
    assert len(records) == 12
    for rec in records:
        validate_record(rec.to_dict())
        assert len(rec.predictions) == 3
        assert rec.predictions[0]["score"] >= rec.predictions[1]["score"]
        true = rec.path.rsplit("_", 1)[1].removesuffix(".png")
        assert rec.predictions[0]["label"] == true


def test_predictor_is_reusable_and_streams(shapes_images):
    predictor = cnnkit.load("classify", topk=1)
    first = predictor(str(shapes_images / "img_00_*.png"))
    stream = predictor.stream([str(shapes_images)], batch_size=5)
    assert next(iter(stream)).path == first[0].path


def test_cli_jsonl_and_bad_file_exit_code(shapes_images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = runner.invoke(app, ["classify", str(shapes_images), str(bad), "--format", "jsonl", "-k", "2"])
    assert result.exit_code == 1, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 13
    for rec in lines:
        validate_record(rec)
    failed = [r for r in lines if r["error"]]
    assert [r["path"] for r in failed] == [str(bad)]
    assert "broken.jpg" in result.stderr and "1 failed" in result.stderr


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_cli_formats(shapes_images, fmt):
    result = runner.invoke(app, ["classify", str(shapes_images / "img_0*.png"), "--format", fmt, "-k", "1"])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        assert len(json.loads(result.stdout)) == 10
    elif fmt == "csv":
        rows = result.stdout.strip().splitlines()
        assert rows[0].startswith("path,task,model,width,height,time_ms,error,schema_version,rank,label,class_id,score")
        assert len(rows) == 11
    else:
        assert "img_00_" in result.stdout and "predictions" in result.stdout


def test_cli_output_file_save_dir_and_no_overwrite(shapes_images, tmp_path):
    out = tmp_path / "out.jsonl"
    save = tmp_path / "pics"
    args = ["classify", str(shapes_images), "-o", str(out), "--save-dir", str(save), "-k", "1"]
    assert runner.invoke(app, args).exit_code == 0
    assert len(out.read_text().splitlines()) == 12
    assert len(list(save.glob("*.jpg"))) == 12
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert len(out.read_text().splitlines()) == 12
    assert runner.invoke(app, [*args, "--exist-ok"]).exit_code == 0


def test_cli_default_save_dir_increments(shapes_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert runner.invoke(app, ["-q", "classify", str(shapes_images / "img_00_*"), "--save"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "classify").iterdir()) == ["exp", "exp2"]


def test_cli_shards_cover_everything_once(shapes_images):
    seen = []
    for k in (1, 2, 3):
        result = runner.invoke(app, ["classify", str(shapes_images), "--shard", f"{k}/3", "-f", "jsonl"])
        assert result.exit_code == 0
        seen += [json.loads(x)["path"] for x in result.stdout.splitlines()]
    assert sorted(seen) == sorted(str(p) for p in shapes_images.glob("*.png"))


def test_cli_skip_existing_resumes(shapes_images, tmp_path):
    out = tmp_path / "r.jsonl"
    first = runner.invoke(app, ["classify", str(shapes_images / "img_0*.png"), "-o", str(out)])
    assert first.exit_code == 0
    with open(out, "a") as f:
        f.write('{"path": "torn')  # a crash mid-line
    result = runner.invoke(app, ["classify", str(shapes_images), "-o", str(out), "--skip-existing"])
    assert result.exit_code == 0
    paths = [json.loads(x)["path"] for x in out.read_text().splitlines() if x.startswith('{"path": "/')]
    assert sorted(paths) == sorted(str(p) for p in shapes_images.glob("*.png"))


def test_cli_skip_existing_through_a_link_and_with_its_report_and_save_folder(shapes_images, tmp_path, monkeypatch):
    """The same command again resumes: inputs named through a symbolic link to their folder are the inputs done,
    and the run's own --report and --save-dir are taken again; a run from another folder is warned about."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(shapes_images)
    out, args = tmp_path / "r.jsonl", ["--report", "r.html", "--save-dir", "saved"]
    first = runner.invoke(app, ["classify", str(shapes_images / "img_0*.png"), "-o", str(out), *args])
    assert first.exit_code == 0, first.output
    done = out.read_text().count("\n")
    again = runner.invoke(app, ["classify", "link/img_0*.png", "-o", str(out), "--skip-existing", *args])
    assert again.exit_code == 0, again.output
    assert out.read_text().count("\n") == done and "0 image(s)" in again.output
    (tmp_path / "elsewhere").mkdir()
    relative = runner.invoke(app, ["classify", "link/img_0*.png", "-o", "rel.jsonl"])
    assert relative.exit_code == 0, relative.output
    monkeypatch.chdir(tmp_path / "elsewhere")
    moved = runner.invoke(app, ["classify", "../link/img_0*.png", "-o", "../rel.jsonl", "--skip-existing"])
    assert moved.exit_code == 0 and "rerun from the folder the first run started in" in moved.output
    monkeypatch.chdir(tmp_path)  # new inputs added to a file whose earlier ones are still here: no warning
    more = runner.invoke(app, ["classify", "link/img_1*.png", "-o", "rel.jsonl", "--skip-existing"])
    assert more.exit_code == 0 and "rerun from" not in more.output


def test_cli_stdin_source(shapes_images):
    files = "\n".join(str(p) for p in sorted(shapes_images.glob("*.png"))[:3])
    result = runner.invoke(app, ["classify", "-", "-f", "jsonl"], input=files + "\n")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["classify"],
        ["classify", "x.png", "--shard", "5/2"],
        ["classify", "x.png", "--device", "tpu"],
        ["classify", "x.png", "--format", "xml"],
        ["classify", "x.png", "--half"],
        ["classify", "x.png", "--topk", "0"],
        ["classify", "x.png", "--model", "nope"],
    ],
)
def test_usage_errors_exit_2(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip()


def test_checkpoint_from_weights_flag(tmp_path, shapes_images):
    """A checkpoint carries labels and preprocessing: classify uses its labels."""
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.nets import ShapesNet

    ckpt = save_checkpoint(
        tmp_path / "m.safetensors",
        ShapesNet(num_classes=2),
        {
            "task": "classify",
            "arch": "shapes_cnn",
            "labels": ["yes", "no"],
            "name": "tiny",
            "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
        },
    )
    result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*"), "-w", str(ckpt), "-f", "json"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)[0]
    assert rec["model"] == "tiny" and {p["label"] for p in rec["predictions"]} == {"yes", "no"}


def test_threads_option(shapes_images):
    import torch

    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*"), "--threads", "1", "-f", "jsonl"])
        assert result.exit_code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_real_entry_point_on_samples(tmp_path):
    """The README's first command, through the installed interpreter, as a subprocess."""
    save = tmp_path / "annotated"
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "classify", str(SAMPLES), "--save-dir", str(save), "--format", "jsonl"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(records) == len([p for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg")])
    shape_recs = [r for r in records if "/shape_" in r["path"]]
    assert all(r["path"].rsplit("_", 1)[1].split(".")[0] == r["predictions"][0]["label"] for r in shape_recs)
    assert len(list(save.glob("*.jpg"))) == len(records)
    Image.open(next(save.glob("*.jpg"))).verify()


def test_in_memory_array_gets_placeholder_path():
    rec = cnnkit.classify(np.zeros((64, 64, 3), np.uint8), topk=1)[0]
    assert rec.path == "<image 0>" and rec.ok


def test_recursive_workers_max_pixels_and_verbose(tmp_path, shapes_images):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for p in sorted(shapes_images.glob("*.png"))[:2]:
        (nested / p.name).write_bytes(p.read_bytes())
    flat = runner.invoke(app, ["classify", str(tmp_path), "-f", "jsonl"])
    assert flat.exit_code == 1 and "use --recursive" in flat.stdout
    deep = runner.invoke(app, ["-v", "classify", str(tmp_path), "-r", "--workers", "1", "-f", "jsonl"])
    assert deep.exit_code == 0 and len(deep.stdout.splitlines()) == 2
    tiny = runner.invoke(app, ["classify", str(nested), "--max-pixels", "100", "-f", "jsonl"])
    assert tiny.exit_code == 1
    assert all("over the limit" in json.loads(x)["error"] for x in tiny.stdout.splitlines())
    quiet = runner.invoke(app, ["-q", "classify", str(nested), "--max-pixels", "100", "-f", "jsonl"])
    assert quiet.exit_code == 1 and quiet.stderr == ""
