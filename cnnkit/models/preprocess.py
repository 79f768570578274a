"""Preprocessing that travels with the weights (torchvision's ``weights.transforms()`` idea).

A :class:`Preprocess` is plain data (serialised into checkpoints) and a callable that
turns a decoded RGB image into a normalised CHW tensor. It runs in the decode
threads, so resizing overlaps with the forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    resize: int  # shorter side is resized to this
    crop: int  # then a centre crop of crop×crop
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"

    def describe(self) -> str:
        return (
            f"resize shorter side to {self.resize} ({self.interpolation}), centre crop {self.crop}, "
            f"scale to [0,1], normalise mean={list(self.mean)} std={list(self.std)}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(
            resize=int(d["resize"]), crop=int(d["crop"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bilinear"),
        )

    @classmethod
    def from_torchvision(cls, weights: Any) -> "Preprocess":
        """Read the parameters of a torchvision ``ImageClassification`` preset."""
        t = weights.transforms()
        interp = getattr(t.interpolation, "value", str(t.interpolation))
        return cls(
            resize=int(t.resize_size[0]), crop=int(t.crop_size[0]), mean=tuple(t.mean), std=tuple(t.std),
            interpolation=str(interp),
        )

    def __call__(self, rgb: np.ndarray) -> Any:
        """H×W×3 uint8 → 3×crop×crop float tensor."""
        import torch
        from PIL import Image

        img = Image.fromarray(rgb)
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(
            self.interpolation, Image.BILINEAR
        )
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std
