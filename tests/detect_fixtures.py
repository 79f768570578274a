"""Fixtures for the detect tests: tiny shapes scenes, a YOLO dataset, a random-weights YOLO file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

UNSEEN_SEED = 4242  # training used seed 0; this seed is never trained on


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> tuple[Path, list]:
    """Four 256 px shapes scenes as PNG files, with their ground-truth objects."""
    from cnnkit.data.shapes import scene

    folder = tmp_path_factory.mktemp("scenes")
    truth = []
    for i in range(4):
        sc = scene(UNSEEN_SEED, i, size=256)
        Image.fromarray(sc.image).save(folder / f"scene_{i}.png")
        truth.append(sc.objects)
    return folder, truth


@pytest.fixture(scope="session")
def yolo_set(tmp_path_factory) -> Path:
    """A YOLO-format shapes dataset (seed 4242): 6 train / 30 val scenes at 256 px; returns data.yaml."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("yolo_set")
    export_shapes(out, "yolo", n=36, seed=UNSEEN_SEED, imgsz=256, val_fraction=30 / 36)
    return out / "data.yaml"


@pytest.fixture(scope="session")
def tiny_yolo_set(tmp_path_factory) -> Path:
    """A handful of 64 px scenes (4 train / 2 val) for a fine-tuning smoke run."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("tiny_yolo")
    export_shapes(out, "yolo", n=6, seed=99, imgsz=64, val_fraction=2 / 6)
    return out / "data.yaml"


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def upscaled_jpeg(path: Path, rgb: np.ndarray, factor: int) -> Path:
    img = Image.fromarray(rgb).resize((rgb.shape[1] * factor, rgb.shape[0] * factor), Image.NEAREST)
    img.save(path, quality=95)
    return path


def error_text(result) -> str:
    """The one-line error, whether the root group printed it or CliRunner kept the exception."""
    return result.stderr + (str(result.exception) if result.exception else "")


def is_usage_error(result) -> bool:
    """Exit code 2, or (without the root group's handler) a UsageError left on the result."""
    from cnnkit.errors import UsageError

    return result.exit_code == 2 or isinstance(result.exception, UsageError)
