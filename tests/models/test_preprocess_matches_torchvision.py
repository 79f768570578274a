"""A torchvision classifier's preprocessing in cnnkit is its weights' ``transforms()``, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize(("w", "h"), [(451, 300), (300, 451), (600, 400), (810, 1080), (333, 257), (257, 333)])
def test_resize_and_centre_crop_are_torchvisions(w: int, h: int) -> None:
    """The long side truncated as Resize(int) does (451×300 became 385 wide, not 384) and the crop placed as
    CenterCrop rounds it."""
    from torchvision.models import ResNet18_Weights

    from cnnkit.models.preprocess import Preprocess

    weights = ResNet18_Weights.IMAGENET1K_V1
    rgb = np.random.default_rng(w * h).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ours = Preprocess.from_torchvision(weights)(rgb)
    theirs = weights.transforms()(Image.fromarray(rgb))
    assert ours.shape == theirs.shape and float((ours - theirs).abs().max()) < 1e-5
