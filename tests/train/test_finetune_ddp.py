"""``torchrun --nproc-per-node 2 -m cnnkit finetune``: DDP with gloo on CPU (issue 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.models.checkpoint import read_meta
from tests.fixtures.finetune import NAMES

REPO = Path(__file__).resolve().parents[2]


def test_two_cpu_processes_train_one_model_that_loads_and_classifies(tiny_digits, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cnnkit",
        "finetune",
        str(tiny_digits),
        "--model",
        "lenet5",
        "--no-pretrained",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 reports, rank 1 stays quiet
    summary = json.loads(lines[0])
    assert summary["metrics"]["world_size"] == 2
    meta = read_meta(out / "best.safetensors")
    assert meta["world_size"] == 2 and meta["labels"] == sorted(NAMES)
    assert summary["metrics"]["val_images"] == 3 * round(12 * 0.2)  # both ranks counted, none twice
    assert not list(out.glob(".*.tmp"))
    r = CliRunner().invoke(
        app,
        ["classify", str(tiny_digits / "one"), "--weights", str(out / "best.safetensors"), "-f", "jsonl", "-k", "1"],
    )
    assert r.exit_code == 0, r.output
    labels = [json.loads(line)["predictions"][0]["label"] for line in r.stdout.splitlines()]
    assert len(labels) == 12 and set(labels) <= set(NAMES)


def test_more_processes_than_val_images_do_not_wait_for_ever(tmp_path):
    """Three processes, two val images, a model with BatchNorm: the rank given no val image sat in the metrics'
    all-reduce while the others' DDP forward broadcast buffers, and the run hung."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 1)):
        for name in ("a", "b"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "-m", "cnnkit"]
    cmd += ["finetune", str(tmp_path / "data"), "--model", "shapes-cnn", "--no-pretrained", "--imgsz", "32"]
    cmd += ["--epochs", "1", "--batch-size", "2", "--workers", "0", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert summary["metrics"]["val_images"] == 2 and summary["metrics"]["world_size"] == 3


def test_tasks_that_train_in_one_process_refuse_torchrun(monkeypatch, tmp_path):
    """Under torchrun, segment and instance trained one copy per process into run folders of their own, and detect
    failed with torch's "Default process group has not been initialized", leaving two run folders."""
    import pytest

    import cnnkit
    from cnnkit.errors import OptionError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for task in ("segment", "instance", "detect"):
        with pytest.raises(OptionError, match="only classify runs under torchrun"):
            cnnkit.finetune(str(tmp_path), task=task, out=str(tmp_path / task))
        assert not (tmp_path / task).exists()
