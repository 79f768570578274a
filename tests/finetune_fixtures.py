"""Tiny real-digit folder datasets for the finetune and classify-val tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NAMES = ("zero", "one", "two")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: on a shared 2-core machine two threads oversubscribe badly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_model(spec, num_classes: int, big: int = 30_000_000) -> "torch.nn.Module":
    """The registry builder's model with random weights.

    Small models are built as they are (their own initialisation); big ones are built
    on the meta device and filled with scaled uniform noise, which skips seconds of
    initialisation per model and still runs every layer.
    """
    import torch

    with torch.device("meta"):
        model = spec.builder(num_classes=num_classes)
    if sum(p.numel() for p in model.parameters()) < big:
        return spec.builder(num_classes=num_classes)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.ndim >= 2:
                bound = t[0].numel() ** -0.5
                t.uniform_(-bound, bound, generator=g)
            elif name.endswith(("running_var", "weight")):
                t.fill_(1)
            else:
                t.zero_()
    return model


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
