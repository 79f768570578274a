"""Real photos that installed packages ship, as negatives and backgrounds for the bundled models.

The bundled models learn "not a shape" from these: scikit-image's ``data`` photos are
the training pool; scikit-learn's two sample photos, ultralytics' ``bus.jpg`` and
``zidane.jpg`` and scikit-image's ``motorcycle_left`` are held out, so tests measure
the models on photos they never saw. Nothing here downloads: every file is read from
the installed package's own folder (scikit-image is a ``dev`` dependency, used by the
retraining scripts and the tests only).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

# Photos and textures in skimage/data; synthetic charts (chessboard, phantom, color wheel, logo)
# are left out because their squares, ellipses and discs look like the shapes themselves.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
HELDOUT_PHOTOS: tuple[str, ...] = (
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
    "ultralytics:bus.jpg",
    "ultralytics:zidane.jpg",
    "skimage:motorcycle_left.png",
)


def photo_path(name: str) -> Path:
    """``package:file`` (or a bare skimage file name) → the file inside the installed package."""
    package, _, file = name.rpartition(":")
    package = package or "skimage"
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent / file
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / file
    if package == "ultralytics":
        import importlib.util

        spec = importlib.util.find_spec("ultralytics")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("ultralytics is not installed")
        return Path(spec.origin).parent / "assets" / file
    raise ValueError(f"unknown photo package {package!r}")


@cache
def load_photo(name: str) -> np.ndarray:
    """A photo as H×W×3 uint8 (grayscale and RGBA become RGB)."""
    with Image.open(photo_path(name)) as img:
        return np.asarray(img.convert("RGB"))


def train_pool() -> list[np.ndarray]:
    """The bundled training photos, decoded (backgrounds for the synthetic scenes)."""
    return [load_photo(n) for n in TRAIN_PHOTOS]


def photo_crop(
    rng: np.random.Generator, pool: list[np.ndarray], size: tuple[int, int], scale: tuple[float, float] = (0.05, 1.0)
) -> np.ndarray:
    """A random crop of a random photo, resized to ``size`` (h, w), flipped and colour-jittered."""
    photo = pool[int(rng.integers(len(pool)))]
    ph, pw = photo.shape[:2]
    h, w = size
    area = rng.uniform(*scale) * ph * pw
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6))) * w / h
    cw = int(min(pw, max(8, round(math.sqrt(area * aspect)))))
    ch = int(min(ph, max(8, round(math.sqrt(area / aspect)))))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(photo[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(0.7, 1.3, 3) if rng.random() < 0.5 else np.full(3, rng.uniform(0.7, 1.3))
    return np.clip(out * gain + rng.uniform(-25, 25), 0, 255)


def texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Shape-free synthetic negatives: noise at several scales, flat colour, or a plain shapes background."""
    from cnnkit.data.shapes import _background

    h, w = size
    kind = rng.integers(4)
    if kind == 0:
        return rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    if kind == 1:
        cell = int(rng.integers(2, 17))
        small = rng.uniform(0, 255, (max(1, h // cell), max(1, w // cell), 3)).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    if kind == 2:
        return np.broadcast_to(rng.uniform(0, 255, 3), (h, w, 3)) + rng.normal(0, rng.uniform(0, 12), (h, w, 3))
    return _background(rng, h, w)


def other_sample(seed: int, index: int, size: int = 64) -> np.ndarray:
    """An image of the classifier's ``other`` class: three in four a photo crop, else a texture."""
    rng = np.random.default_rng([seed, index, 11])
    img = photo_crop(rng, train_pool(), (size, size)) if rng.random() < 0.75 else texture(rng, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)
