"""Issue 8: every architecture the chapter names exports to ONNX, verified against PyTorch."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.models.checkpoint import save_checkpoint
from cnnkit.models.registry import get_spec

runner = CliRunner()
CHAPTER = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "efficientnet_b0", "vit_b_16"]


@pytest.mark.parametrize("name", CHAPTER)
def test_chapter_model_exports_to_onnx(tmp_path, name):
    import torch

    torch.manual_seed(0)
    spec = get_spec(name)
    # AlexNet and VGG pool adaptively to 6x6 / 7x7, which ONNX exports only at their native size.
    size = spec.meta.get("fixed_size") or (224 if name in ("alexnet", "vgg16") else 64)
    model = spec.builder(num_classes=3)
    ckpt = save_checkpoint(
        tmp_path / f"{name}.safetensors",
        model,
        {
            "task": "classify",
            "arch": spec.family,
            "name": name,
            "labels": ["a", "b", "c"],
            "preprocess": {"resize": size, "crop": size, "mean": [0.5] * 3, "std": [0.25] * 3},
        },
        half=False,
    )
    out = tmp_path / f"{name}.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"][-1] == size and report["max_abs_diff"] < 1e-2
    assert out.stat().st_size > 0
