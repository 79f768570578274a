"""Preprocessing that travels with the weights (torchvision's ``weights.transforms()`` idea).

A :class:`Preprocess` is plain data (serialised into checkpoints) and a callable that
turns a decoded RGB image into a normalised CHW tensor. It runs in the decode
threads, so resizing overlaps with the forward pass.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.config import MAX_IMGSZ

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a classifier's input is made: resize, centre crop and normalisation, as the model was trained."""

    resize: int  # shorter side is resized to this
    crop: int  # then a centre crop of crop×crop
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        """Checkpoint metadata builds these: a crop of a million pixels a side must not reach an allocation."""
        for name, top in (("resize", 2 * MAX_IMGSZ), ("crop", MAX_IMGSZ)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= top:
                raise ValueError(f"preprocessing {name} {value!r} is not a side from 1 to {top}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
                raise ValueError(f"preprocessing {name} {list(values)!r} is not three finite numbers")
        if any(v == 0 for v in self.std):
            raise ValueError(f"preprocessing std {list(self.std)!r} has a zero")

    def describe(self) -> str:
        return (
            f"resize shorter side to {self.resize} ({self.interpolation}), centre crop {self.crop}, "
            f"scale to [0,1], normalise mean={list(self.mean)} std={list(self.std)}"
        )

    def at_size(self, imgsz: int | None) -> Preprocess:
        """The same recipe for a model input of ``imgsz`` (finetune, export and predict ``imgsz``): the
        crop becomes ``imgsz`` and the resize keeps its ratio to the crop; ``None`` keeps it as is."""
        if not imgsz or imgsz == self.crop:
            return self
        resize = imgsz if self.resize == self.crop else round(imgsz * self.resize / self.crop)
        return Preprocess(resize=resize, crop=imgsz, mean=self.mean, std=self.std, interpolation=self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            resize=int(d["resize"]),
            crop=int(d["crop"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bilinear"),
        )

    @classmethod
    def from_torchvision(cls, weights: Any) -> Preprocess:
        """Read the parameters of a torchvision ``ImageClassification`` preset."""
        t = weights.transforms()
        interp = getattr(t.interpolation, "value", str(t.interpolation))
        return cls(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=str(interp),
        )

    @classmethod
    def from_timm(cls, cfg: dict[str, Any]) -> Preprocess:
        """timm's ``pretrained_cfg`` as timm's eval transform uses it (``create_transform(**resolve_data_config
        (...))``): the short side resized to ⌊size / crop_pct⌋, a centre crop of ``input_size``; a value of
        another kind (a non-square input, another ``crop_mode``) is a ``ValueError``."""
        size = cfg.get("input_size")
        if not (isinstance(size, list) and len(size) == 3 and size[1] == size[2] and isinstance(size[1], int)):
            raise ValueError(f"input_size {size!r} is not [3, S, S]")
        crop_pct = cfg.get("crop_pct", 0.875)
        if not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct {crop_pct!r} is not a fraction in (0, 1]")
        if cfg.get("crop_mode", "center") != "center":
            raise ValueError(f"crop_mode {cfg.get('crop_mode')!r} is not center")
        interpolation = cfg.get("interpolation", "bilinear")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"interpolation {interpolation!r} is not bilinear, bicubic or nearest")
        return cls(
            resize=math.floor(size[1] / crop_pct),
            crop=size[1],
            mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
            interpolation=interpolation,
        )

    def __call__(
        self, rgb: np.ndarray, size: tuple[int, int] | None = None, scale: tuple[float, float] = (1.0, 1.0)
    ) -> torch.Tensor:
        """H×W×3 uint8 → 3×crop×crop float tensor.

        When resizing the whole image would give more than four crops' worth of pixels (an aspect
        ratio past about 4:1), only the source region under the centre crop is resampled (PIL's
        ``box``: the same pixel centres and filter as resizing, then cropping), so a 200000×1
        image never becomes a 51-million-pixel-wide intermediate. ``rgb`` may be a JPEG draft of an image
        of ``size`` (width, height), ``scale`` original pixels per drafted one: the resize is then computed
        on the original's geometry and read from the draft through ``box``, so the crop covers the same
        region as from a full decode (rounding the draft's size instead shifted it by up to a pixel).
        """
        import torch
        from PIL import Image

        img = Image.fromarray(rgb)
        w, h = size or img.size
        region = (0.0, 0.0, w / scale[0], h / scale[1])  # the original image in the draft's pixels
        # torchvision's Resize(int): the short side becomes `resize`, the long one int(resize × long / short)
        nw, nh = (self.resize, int(self.resize * h / w)) if w <= h else (int(self.resize * w / h), self.resize)
        nw, nh = max(self.crop, nw), max(self.crop, nh)
        resample = {
            "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST,
        }.get(self.interpolation, Image.Resampling.BILINEAR)
        left, top = int(round((nw - self.crop) / 2.0)), int(round((nh - self.crop) / 2.0))  # as CenterCrop
        if nw * nh > 4 * self.crop * self.crop:
            sx, sy = w / nw / scale[0], h / nh / scale[1]
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            img = img.resize((self.crop, self.crop), resample, box=box)
        else:
            if (nw, nh) != img.size or scale != (1.0, 1.0):
                img = img.resize((nw, nh), resample, box=region)
            img = img.crop((left, top, left + self.crop, top + self.crop))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std


def by_shape(tensors: Sequence[Any]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by shape, in first-seen order. torchvision's R-CNNs pad a batch to its
    largest image, which changes what the others get (the batch size then changed the scores), so only
    images of one size share a forward pass."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return list(groups.values())


RCNN_FULL_PIXELS = 16_000_000  # up to this (a 12 MP photo, a 4K frame), an R-CNN gets the image as decoded


def rcnn_input(rgb: np.ndarray, min_size: int, max_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An image for a torchvision two-stage model (Faster/Mask R-CNN), which resizes by itself so
    that the short side is ``min_size`` and the long side at most ``max_size``.

    An image is handed over as decoded, as torchvision's own pipeline takes it, unless the model would
    shrink it more than 2× and it (padded, see below) has more than ``RCNN_FULL_PIXELS``: then it is first
    reduced here to the model's size, in uint8 with PIL, since the model would otherwise normalise
    full-size float copies of it (1.7 GB each for 144 MP). A thin image is padded (bottom/right) so the
    model's resize keeps its short side at least one stride-32 feature cell. Returns the array and the
    height and width of the image in it.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = min(min_size / min(h, w), max_size / max(h, w))
    need = math.ceil(32 * max(h, w) / max_size)
    if scale < 0.5 and max(h, need) * max(w, need) > RCNN_FULL_PIXELS:
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0))
        need = math.ceil(32 * max(h, w) / max_size)
    if min(h, w) < need:
        rgb = np.pad(rgb, ((0, max(0, need - h)), (0, max(0, need - w)), (0, 0)))
    return rgb, (h, w)


def rcnn_working_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The size a torchvision two-stage model resizes an ``h``×``w`` input to."""
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → 3×H×W float tensor in [0, 1]: the input of torchvision's R-CNNs, which normalise and
    resize themselves. Shared by the instance predictor and the training code."""
    import torch

    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


def sized(pre: Preprocess, imgsz: int | None, *, name: str, fixed: int | None = None) -> Preprocess:
    """``pre`` at input side ``imgsz`` for model ``name``; ``fixed``: the only side its architecture takes."""
    from cnnkit.errors import OptionError

    if imgsz is not None and not 1 <= imgsz <= MAX_IMGSZ:
        raise OptionError("imgsz", f"must be from 1 to {MAX_IMGSZ}", imgsz)
    if imgsz and fixed and imgsz != fixed:
        raise OptionError("imgsz", f"{name} only takes {fixed}x{fixed} inputs", imgsz)
    return pre.at_size(imgsz)
