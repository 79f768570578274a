"""Tiny real-digit folder datasets for the finetune and classify-val tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NAMES = ("zero", "one", "two")


def write_digits(root: Path, per_class: int = 12, names: tuple[str, ...] = NAMES, offset: int = 0) -> Path:
    """``root/<name>/*.png``: the first ``per_class`` real sklearn digits of 0, 1, 2 … at 32 px."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label, name in enumerate(names):
        idx = np.flatnonzero(digits.target == label)[offset: offset + per_class]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in idx:
            arr = (digits.images[i] / 16.0 * 255).astype(np.uint8)
            Image.fromarray(arr, "L").resize((32, 32), Image.BILINEAR).save(root / name / f"d{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory) -> Path:
    """3 classes × 12 real digits, one folder per class (split by --val-split)."""
    return write_digits(tmp_path_factory.mktemp("tiny_digits"))


@pytest.fixture(scope="session")
def digits_val_split(tmp_path_factory) -> Path:
    """The full ``cnnkit data digits`` export (seed 0): the split the bundled lenet5 was validated on."""
    from cnnkit.data.export import export_digits

    root = tmp_path_factory.mktemp("digits")
    export_digits(root, val_fraction=0.2, seed=0, size=32)
    return root
