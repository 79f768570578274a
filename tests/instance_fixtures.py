"""Session fixtures for the instance tests: a tiny random Mask R-CNN checkpoint and tiny shapes data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

TINY_ARCH = {"backbone": "resnet18", "fpn_channels": 64, "min_size": 64, "max_size": 64}


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised light Mask R-CNN (64 px) saved as a cnnkit checkpoint."""
    import torch

    from cnnkit.data.shapes import CLASSES
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.tasks.instance.zoo import light_maskrcnn

    torch.manual_seed(0)
    model = light_maskrcnn(len(CLASSES), **TINY_ARCH)
    meta = {"task": "instance", "arch": "maskrcnn_light", "arch_kwargs": TINY_ARCH, "name": "tiny-maskrcnn",
            "labels": list(CLASSES)}
    return save_checkpoint(tmp_path_factory.mktemp("tiny_maskrcnn") / "tiny.safetensors", model, meta)


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory) -> Path:
    """Three 64 px shapes scenes (seed 777)."""
    from cnnkit.data.shapes import scene

    folder = tmp_path_factory.mktemp("instance_scenes")
    for i in range(3):
        Image.fromarray(scene(777, i, size=64).image).save(folder / f"scene_{i}.png")
    return folder


@pytest.fixture(scope="session")
def coco_data(tmp_path_factory) -> Path:
    """``cnnkit data shapes --format coco``: 2 train + 2 val images of 64 px."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("coco") / "shapes"
    export_shapes(out, "coco", n=4, seed=3, imgsz=64, val_fraction=0.5)
    return out
