"""Segmentation finetuning through ``cnnkit.api.finetune(task="segment")``: checkpoints, resume, reload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnkit.cli import app
from tests.fixtures.segment import TINY

runner = CliRunner()


def test_joint_transforms_move_image_and_mask_together():
    from cnnkit.tasks.segment.train import PairDataset, transforms

    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[10:20, 5:30] = 255
    mask = (rgb[..., 0] > 0).astype(np.int64)
    ds = PairDataset(lambda i: (rgb, mask), 4, transforms(32, True, (0.0,) * 3, (1.0,) * 3))
    torch.manual_seed(0)
    checked = 0
    for i in range(4):
        image, target = ds[i]
        assert image.shape == (3, 32, 32) and target.shape == (32, 32) and target.dtype == torch.long
        grey, inside = image.mean(0), target.bool()
        if inside.any() and (~inside).any():
            assert grey[inside].mean() > grey[~inside].mean() + 0.5  # the bright box is where the mask is
            assert ((grey > 0.5) == inside).float().mean() > 0.9
            checked += 1
    assert checked


def test_finetune_api_writes_checkpoints_that_segment_loads(masks_data, tmp_path):
    from cnnkit import api

    out = tmp_path / "run"
    result = api.finetune(
        str(masks_data),
        task="segment",
        arch="unet",
        encoder=TINY["encoder"],
        epochs=1,
        batch_size=3,
        imgsz=64,
        out=str(out),
        progress=False,
    )
    assert result["out"] == str(out) and (out / "last.pt").is_file()
    assert 0.0 <= result["metrics"]["best_val_miou"] <= 1.0
    image = next((masks_data / "val" / "images").iterdir())
    res = runner.invoke(app, ["segment", str(image), "--weights", result["best"], "-f", "json"])
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    names = ["background", "circle", "square", "triangle", "star", "hexagon"]
    assert all(p["label"] == names[p["class_id"]] for p in rec["predictions"])

    again = api.finetune(
        str(masks_data),
        task="segment",
        arch="unet",
        encoder=TINY["encoder"],
        epochs=2,
        batch_size=3,
        imgsz=64,
        resume=str(out),
        progress=False,
    )
    assert again["metrics"]["last"]["epoch"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + epoch 1 (kept from the first run) + epoch 2


@pytest.mark.parametrize("imgsz, expected", [(None, 192), (64, 64)])
def test_retraining_script_takes_the_registry_input_size_or_imgsz(tmp_path, monkeypatch, imgsz, expected):
    """``scripts/train_shapes_seg.py`` records the input size it trained at, as prediction will use it."""
    import runpy
    import sys

    from cnnkit.models.checkpoint import read_meta

    out = tmp_path / "run"
    argv = [
        "train_shapes_seg.py",
        "--arch",
        "deeplabv3plus",
        "--n-train",
        "8",
        "--train-size",
        "64",
        "--n-val",
        "2",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv + (["--imgsz", str(imgsz)] if imgsz else []))
    threads = torch.get_num_threads()  # the script sets its own
    try:
        runpy.run_path(
            str(Path(__file__).resolve().parents[3] / "scripts" / "train_shapes_seg.py"), run_name="__main__"
        )
    finally:
        torch.set_num_threads(threads)
    meta = read_meta(out / "best.safetensors")
    assert meta["preprocess"]["crop"] == meta["preprocess"]["resize"] == expected
    assert meta["arch_kwargs"] == {
        "arch": "deeplabv3plus",
        "encoder": "tu-tf_mobilenetv3_small_100",
        "decoder_channels": 96,
    }
