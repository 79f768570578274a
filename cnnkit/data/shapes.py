"""Deterministic synthetic scenes of coloured shapes, with everything all four tasks need.

Scene ``i`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``, so any
scene can be regenerated alone and two seeds never share a scene. Objects are painted
in order, later ones occluding earlier ones; each object's mask is its *visible* part
and its box is the box of that mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")


@dataclass
class ShapeObject:
    """One drawn shape: its class, its box and the mask of its visible part."""

    class_id: int
    label: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive), pixels
    mask: np.ndarray  # H×W bool, the visible part


@dataclass
class Scene:
    """A synthetic image and the shapes drawn on it, for tests and the bundled models' training data."""

    image: np.ndarray  # H×W×3 uint8
    objects: list[ShapeObject] = field(default_factory=list)

    @property
    def semantic(self) -> np.ndarray:
        """H×W uint8: 0 background, ``class_id + 1`` where an object is visible."""
        out = np.zeros(self.image.shape[:2], np.uint8)
        for obj in self.objects:
            out[obj.mask] = obj.class_id + 1
        return out


def _polygon(cls: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if cls == "square":
        n, radii = 4, [r]
    elif cls == "triangle":
        n, radii = 3, [r]
    elif cls == "hexagon":
        n, radii = 6, [r]
    elif cls == "star":
        n, radii = 10, [r, r * 0.42]
    else:
        raise ValueError(cls)
    pts = []
    for k in range(n):
        a = angle + 2 * math.pi * k / n
        rad = radii[k % len(radii)]
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gradient, optional stripes and pixel noise: never a flat colour."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
    grad = c0[None, :] * (1 - t[:, None]) + c1[None, :] * t[:, None]
    bg = np.broadcast_to(grad[None, :, :], (h, w, 3)) if len(t) == w else np.broadcast_to(grad[:, None, :], (h, w, 3))
    bg = bg.astype(np.float32)
    if rng.random() < 0.4:
        period = rng.uniform(6, 24)
        yy, xx = np.mgrid[0:h, 0:w]
        theta = rng.uniform(0, math.pi)
        stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
        bg += stripes[..., None] * rng.uniform(10, 40)
    bg += rng.normal(0, rng.uniform(3, 18), (h, w, 3))
    return bg


def _colour_far_from(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - ref).sum() > 160:
            return c
    return 255 - ref


def _shape_mask(cls: str, h: int, w: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(cls, cx, cy, r, angle), fill=255)
    return np.asarray(canvas) > 127


def generate_scene(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 256,
    objects: tuple[int, int] = (1, 4),
    radius: tuple[float, float] = (0.08, 0.22),
    min_visible: float = 0.4,
    photos: list[np.ndarray] | None = None,
    photo_fraction: float = 0.5,
) -> Scene:
    """One scene; ``radius`` is a fraction of the shorter side.

    With ``photos`` (see :mod:`cnnkit.data.photos`), a ``photo_fraction`` of scenes are drawn
    over a random crop of a real photo instead of a synthetic background, so a model learns
    that photo texture is not a shape. Without it the random stream is unchanged, so every
    existing seed gives the same scene as before.
    """
    h, w = (size, size) if isinstance(size, int) else size
    if photos and rng.random() < photo_fraction:
        from cnnkit.data.photos import photo_crop

        canvas = photo_crop(rng, photos, (h, w), scale=(0.2, 1.0))
    else:
        canvas = _background(rng, h, w)
    mean_bg = canvas.reshape(-1, 3).mean(0)
    placed: list[tuple[int, np.ndarray, float]] = []
    n = int(rng.integers(objects[0], objects[1] + 1))
    for _ in range(n):
        cid = int(rng.integers(len(CLASSES)))
        r = rng.uniform(*radius) * min(h, w)
        cx, cy = rng.uniform(r * 0.6, w - r * 0.6), rng.uniform(r * 0.6, h - r * 0.6)
        mask = _shape_mask(CLASSES[cid], h, w, cx, cy, r, rng.uniform(0, 2 * math.pi))
        colour = _colour_far_from(rng, mean_bg)
        shade = 1.0 + rng.normal(0, 0.04, (h, w, 1))
        canvas[mask] = colour[None, :] * shade[mask]
        for i, (_, other, _) in enumerate(placed):
            placed[i] = (placed[i][0], other & ~mask, placed[i][2])
        placed.append((cid, mask, float(mask.sum())))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    scene = Scene(image=image)
    for cid, mask, full in placed:
        if full == 0 or mask.sum() < min_visible * full:
            continue
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        scene.objects.append(ShapeObject(cid, CLASSES[cid], box, mask))
    return scene


def scene(seed: int, index: int, **kwargs) -> Scene:
    """Scene ``index`` of ``seed``, reproducible on its own."""
    return generate_scene(np.random.default_rng([seed, index]), **kwargs)


def scenes(n: int, seed: int = 0, **kwargs) -> Iterator[Scene]:
    """``n`` scenes from ``seed``, the same for the same arguments."""
    for i in range(n):
        yield scene(seed, i, **kwargs)


def classification_sample(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, int]:
    """A single-object image and its class: the data of the bundled classifier."""
    rng = np.random.default_rng([seed, index, 7])
    while True:
        sc = generate_scene(rng, size=size, objects=(1, 1), radius=(0.22, 0.42), min_visible=1.0)
        if sc.objects:
            return sc.image, sc.objects[0].class_id
