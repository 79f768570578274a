"""``cnnkit classify val``: metrics on a labelled folder, and the bundled lenet5 on real digits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from tests.fixtures.finetune import write_digits

REPO = Path(__file__).resolve().parents[3]


def run(args: list[str]):
    return CliRunner().invoke(app, args)


def test_bundled_lenet5_reaches_97_percent_on_the_digits_val_split(digits_val_split, tmp_path):
    """The model card's figure, re-measured through the real CLI on the split it was validated on."""
    r = run(
        [
            "classify",
            "val",
            str(digits_val_split),
            "--model",
            "lenet5",
            "--format",
            "json",
            "--save-dir",
            str(tmp_path / "v"),
        ]
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["data"] == str(digits_val_split / "val") and result["images"] == 359
    assert result["top1"] >= 0.97 and result["top5"] >= result["top1"]
    matrix = np.array(result["confusion"]["matrix"])
    assert matrix.sum() == 359 and abs(np.trace(matrix) / 359 - result["top1"]) < 1e-4
    assert (tmp_path / "v" / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((tmp_path / "v" / "metrics.json").read_text())["top1"] == result["top1"]


def test_per_class_metrics_match_the_confusion_matrix(tmp_path):
    data = write_digits(tmp_path / "d", per_class=6, names=("0", "1", "2"))
    weights = REPO / "cnnkit" / "weights" / "lenet5-digits.safetensors"  # a cnnkit checkpoint, as finetune writes
    r = run(["classify", "val", str(data), "--weights", str(weights), "-f", "json", "--save-dir", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    cm = np.array(result["confusion"]["matrix"])
    assert result["confusion"]["labels"] == ["0", "1", "2"] and cm.shape[0] == 3
    for i, row in enumerate(result["per_class"]):
        assert row["support"] == 6
        assert abs(row["recall"] - cm[i, i] / cm[i].sum()) < 1e-4
        predicted = cm[:, i].sum()
        assert abs(row["precision"] - (cm[i, i] / predicted if predicted else 0.0)) < 1e-4


def test_table_output_and_output_file(tmp_path):
    data = write_digits(tmp_path / "d", per_class=3, names=("0", "1"))
    r = run(["classify", "val", str(data), "--model", "lenet5", "-f", "table", "--save-dir", str(tmp_path / "v")])
    assert r.exit_code == 0, r.output
    assert "per class" in r.stdout and "confusion matrix" in r.stdout
    out = tmp_path / "m.json"
    r = run(
        [
            "classify",
            "val",
            str(data),
            "--model",
            "lenet5",
            "-o",
            str(out),
            "--save-dir",
            str(tmp_path / "v"),
            "--exist-ok",
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["images"] == 6


def test_default_folder_increments(tmp_path, monkeypatch):
    data = write_digits(tmp_path / "d", per_class=2, names=("0", "1"))
    monkeypatch.chdir(tmp_path)
    for name in ("val", "val2"):
        assert run(["classify", "val", str(data), "--model", "lenet5", "-f", "json"]).exit_code == 0
        assert (tmp_path / "runs" / "classify" / name / "confusion_matrix.png").is_file()
    # --exist-ok writes into the default folder again, as predict's --save and finetune's run folder do
    assert run(["classify", "val", str(data), "--model", "lenet5", "-f", "json", "--exist-ok"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "classify").iterdir()) == ["val", "val2"]


def test_classes_the_model_does_not_know_are_a_usage_error(tiny_digits, tmp_path):
    r = run(["classify", "val", str(tiny_digits), "--model", "lenet5", "--save-dir", str(tmp_path / "v")])
    assert r.exit_code == 2 and "are not labels of lenet5" in r.output
    assert not (tmp_path / "v").exists()  # a refused run leaves no empty folder that would block the rerun


def test_unreadable_images_are_listed_and_exit_1(tmp_path):
    data = write_digits(tmp_path / "d", per_class=2, names=("0", "1"))
    (data / "1" / "bad.png").write_bytes(b"nope")
    r = run(["classify", "val", str(data), "--model", "lenet5", "-f", "json", "--save-dir", str(tmp_path / "v")])
    assert r.exit_code == 1
    result = json.loads(r.stdout)
    assert result["images"] == 4 and [f["path"] for f in result["failed"]] == [str(data / "1" / "bad.png")]


def test_subprocess_smoke(tmp_path):
    data = write_digits(tmp_path / "d", per_class=2, names=("0", "1"))
    shutil.copytree(data, tmp_path / "both" / "val")
    shutil.copytree(data, tmp_path / "both" / "train")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnkit",
            "classify",
            "val",
            str(tmp_path / "both"),
            "-m",
            "lenet5",
            "--save-dir",
            str(tmp_path / "v"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"] == str(tmp_path / "both" / "val")


def test_a_dataset_with_only_a_val_or_test_split_is_scored_there(tmp_path):
    """ultralytics' classify layout may have val/ (or test/) without train/: its folders are the split, not a
    class called 'val' (the folders inside a split are folders; a class folder holds images)."""
    from cnnkit.tasks.classify.val import val_folder

    for split in ("val", "test"):
        root = tmp_path / split / "ds"
        (root / split / "circle").mkdir(parents=True)
        assert val_folder(root) == root / split
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    (flat / "val" / "a.png").write_bytes(b"")  # a class that happens to be called val
    assert val_folder(flat) == flat
    (tmp_path / "both" / "train").mkdir(parents=True)
    (tmp_path / "both" / "val").mkdir()
    assert val_folder(tmp_path / "both") == tmp_path / "both" / "val"


def test_val_of_a_run_on_a_folder_it_split_scores_that_split_and_its_logged_accuracy(tiny_digits, tmp_path):
    """A run on ``DATA/<class>/*`` holds out ``--val-split`` of it: ``classify val DATA -w best`` scored every image,
    the training ones too, and could not reproduce the run's logged val accuracy."""
    import csv

    out = tmp_path / "run"
    args = ["finetune", str(tiny_digits), "--model", "lenet5", "--epochs", "2", "--batch-size", "8"]
    args += ["--workers", "0", "--threads", "1", "--val-split", "0.25", "--seed", "3", "--out", str(out)]
    assert run(args).exit_code == 0
    best = json.loads((out / "best.json").read_text())["metrics"]
    r = run(["classify", "val", str(tiny_digits), "--weights", str(out / "best.safetensors"), "-f", "json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert result["images"] == int(float(rows[0]["val_images"])) == 9  # 3 classes × round(12 × 0.25)
    assert result["top1"] == pytest.approx(best["val_acc"], abs=1e-4)
    assert "scoring the 9 val images of the split" in r.stderr


def test_val_of_a_run_on_a_folder_it_split_lists_the_folders_unreadable_images(tmp_path):
    """Scoring the split a run made of a folder left that folder's unreadable images out without a word (exit 0),
    where the same folder copied elsewhere listed them in `failed` (exit 1)."""
    from tests.fixtures.finetune import write_digits

    data = write_digits(tmp_path / "digits")
    broken = next(p for p in sorted(data.iterdir()) if p.is_dir()) / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    out = tmp_path / "run"
    args = ["finetune", str(data), "--model", "lenet5", "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    assert run([*args, "--threads", "1", "--val-split", "0.25", "--out", str(out)]).exit_code == 0
    r = run(["classify", "val", str(data), "--weights", str(out / "best.safetensors"), "-f", "json"])
    assert r.exit_code == 1 and "scoring the 9 val images of the split" in r.stderr, r.output
    result = json.loads(r.stdout)
    assert result["images"] == 9 and [f["path"] for f in result["failed"]] == [str(broken)]
