"""Benchmark inputs: real photos from scikit-image, resized and jittered, written as JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo_folder(folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """``n`` JPEGs of ``size`` made from scikit-image's sample photos (reused if present)."""
    import skimage.data as data

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) >= n:
        return folder
    bases = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = Image.fromarray(bases[i % len(bases)])
        w, h = base.size
        x0, y0 = int(rng.integers(0, w // 5)), int(rng.integers(0, h // 5))
        crop = base.crop((x0, y0, x0 + w * 4 // 5, y0 + h * 4 // 5)).resize(size, Image.BILINEAR)
        crop.save(folder / f"photo_{i:05d}.jpg", quality=90)
    return folder
