"""Fixtures for the segmentation tests: a tiny image/mask dataset and a tiny random checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"arch": "unet", "encoder": "tu-tf_mobilenetv3_small_100", "decoder_channels": [16, 16, 8, 8, 8]}


@pytest.fixture(scope="session")
def masks_data(tmp_path_factory) -> Path:
    """``cnnkit data shapes --format masks``: 6 train + 2 val scenes of 64 px (seed 5)."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("seg") / "data"
    export_shapes(out, "masks", 8, seed=5, imgsz=64, val_fraction=0.25)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised 6-class U-Net saved as a cnnkit checkpoint (64 px input)."""
    import torch

    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.tasks.segment.zoo import SHAPES_SEG_LABELS, build_smp

    torch.manual_seed(0)
    model = build_smp(len(SHAPES_SEG_LABELS), **TINY)
    meta = {"task": "segment", "arch": "smp", "arch_kwargs": TINY, "name": "tiny-unet",
            "labels": list(SHAPES_SEG_LABELS),
            "preprocess": {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3}}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, meta)
