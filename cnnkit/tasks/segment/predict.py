"""Semantic segmentation: a class index per pixel, the classes present, masks and overlays.

Small images are letterboxed to the model size (aspect kept, padded to a multiple
of 32) and the logits resized back; with ``tile`` an image larger than the tile is
cut into overlapping windows whose class probabilities are blended with a ramp
weight. Tiles are processed one row band at a time and finished rows are reduced
to class indices at once, so memory grows with the image width, not its area.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import MAX_IMGSZ, MAX_TILE
from cnnkit.device import Runtime
from cnnkit.errors import UsageError
from cnnkit.tasks.segment.val import class_map
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.io.decode import Decoded, check_budget, value_budget
from cnnkit.io.draw import colour
from cnnkit.io.files import atomic_path
from cnnkit.models.loader import Loaded
from cnnkit.records import Record
from cnnkit.tasks.base import PictureSaver, Predictor

# Above this many logit values an image's mask is resized as class indices, not as logits.
_MAX_LOGITS = 1 << 25


@dataclass
class _Letterbox:
    """A resized, padded image and where its content sits in the padded tensor."""

    tensor: Any
    content: tuple[int, int]  # height, width of the resized image inside the padding


def segmentation_palette(num_classes: int) -> list[int]:
    """PNG palette: class 0 black, class ``i`` the drawing colour ``i - 1``."""
    from cnnkit.data.export import mask_palette

    return mask_palette(min(num_classes, 256) - 1)


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with every non-background pixel tinted by its class colour."""
    lut = np.array([(0, 0, 0)] + [colour(i) for i in range(255)], np.float32)
    tint = lut[mask]
    fg = (mask > 0)[..., None]
    return np.where(fg, rgb * (1 - alpha) + tint * alpha, rgb).astype(np.uint8)


def class_summary(mask: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """The classes present in ``mask``, most pixels first."""
    counts = np.bincount(mask.ravel(), minlength=len(labels))
    total = max(int(mask.size), 1)
    order = sorted(np.nonzero(counts)[0], key=lambda i: -counts[i])
    return [
        {"label": labels[i] if i < len(labels) else f"class_{i}", "class_id": int(i), "pixels": int(counts[i]),
         "fraction": round(float(counts[i]) / total, 6)}
        for i in order
    ]


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Window starts covering ``[0, size)``; the last window ends exactly at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def ramp_weight(h: int, w: int) -> np.ndarray:
    """A tent window (1 in the centre, small but positive at the edges) for blending tiles."""
    def ramp(n: int) -> np.ndarray:
        x = (np.arange(n) + 0.5) / n
        return np.clip(1.0 - np.abs(2 * x - 1), 0.05, 1.0)

    return np.outer(ramp(h), ramp(w)).astype(np.float32)


class Segmenter(Predictor):
    task = "segment"

    def __init__(self, loaded: Loaded, runtime: Runtime, imgsz: int | None = None, tile: int | None = None,
                 overlap: float = 0.25) -> None:
        if loaded.preprocess is None:
            raise UsageError(f"{loaded.name}: no preprocessing is known")
        if not 0.0 <= overlap < 0.9:
            raise UsageError(f"--overlap {overlap}: expected a fraction in [0, 0.9)")
        self.loaded, self.name, self.labels = loaded, loaded.name, list(loaded.labels)
        self.pre, self.runtime = loaded.preprocess, runtime
        self.imgsz = int(imgsz or self.pre.crop)
        if not 32 <= self.imgsz <= MAX_IMGSZ:
            raise UsageError(f"--imgsz {self.imgsz}: must be from 32 to {MAX_IMGSZ}")
        self.tile = int(tile) if tile else None
        if self.tile is not None and not 32 <= self.tile <= MAX_TILE:
            raise UsageError(f"--tile {self.tile}: must be from 32 to {MAX_TILE}")
        self.overlap = overlap
        self.min_side = None if self.tile else self.imgsz
        self.model = runtime.prepare(loaded.module)
        self.batch_size = 8
        self._pending: deque[np.ndarray] = deque()  # masks of the batch in flight, in record order

    @classmethod
    def load(
        cls, model: str | None = None, weights: str | None = None, *, arch: str | None = None,
        encoder: str | None = None, imgsz: int | None = None, tile: int | None = None, overlap: float = 0.25,
        device: str | None = None, half: bool = False, threads: int | None = None, backend: str | None = None,
    ) -> "Segmenter":
        from cnnkit.models.loader import resolve

        runtime = Runtime.create(device, half=half, threads=threads)
        loaded = resolve("segment", model, weights, backend=backend, arch=arch, encoder=encoder)
        return cls(loaded, runtime, imgsz, tile, overlap)

    # -- preprocessing (decode threads) ---------------------------------------------------------
    def _tiled(self, decoded: Decoded) -> bool:
        return self.tile is not None and max(decoded.rgb.shape[:2]) > self.tile

    def _normalise(self, rgb: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(self.pre.mean).view(3, 1, 1)
        std = torch.tensor(self.pre.std).view(3, 1, 1)
        return (t - mean) / std

    def _letterbox(self, rgb: np.ndarray, size: int) -> _Letterbox:
        """Resize the longer side to ``size`` and zero-pad (= the mean) to a multiple of 32."""
        import torch
        from PIL import Image

        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        side = -(-size // 32) * 32
        out = torch.zeros(3, side, side)
        out[:, :nh, :nw] = self._normalise(rgb)
        return _Letterbox(out, (nh, nw))

    def preprocess(self, decoded: Decoded) -> Any:
        """The letterboxed tensor; ``None`` for an image to tile (in :meth:`predict_batch`), whose
        memory is checked here: a band of class scores as wide as the image, and each tile's."""
        if not self._tiled(decoded):
            return self._letterbox(decoded.rgb, self.imgsz)
        h, w = decoded.rgb.shape[:2]
        th, tw = min(self.tile, h), min(self.tile, w)
        classes = len(self.labels)
        check_budget(decoded, (2 * classes + 3) * th * w + classes * th * tw,
                     f"tiling with --tile {self.tile} ({classes} class scores per pixel of a {th}-row band)")
        return None

    # -- forward ------------------------------------------------------------------------------
    def _logits(self, batch: Any) -> Any:
        """The main logits: torchvision's ``out`` entry, or an exported file's first output (``output0``)."""
        out = self.model(self.runtime.batch(batch))
        if isinstance(out, dict):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def _full_mask(self, logits: Any, content: tuple[int, int], height: int, width: int) -> np.ndarray:
        """Crop the padding, resize to ``height × width`` and take the class index."""
        import torch
        import torch.nn.functional as F
        from PIL import Image

        logits = logits[:, : content[0], : content[1]]
        if logits.shape[0] * height * width <= _MAX_LOGITS:
            up = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)
            return class_map(up[0]).to(torch.uint8).cpu().numpy()
        small = class_map(logits).to(torch.uint8).cpu().numpy()
        return np.asarray(Image.fromarray(small).resize((width, height), Image.NEAREST))

    def _tile_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Sliding-window segmentation of a large image, one band of tile rows at a time."""
        import torch

        h, w = rgb.shape[:2]
        tile = self.tile or self.imgsz
        th, tw = min(tile, h), min(tile, w)
        stride = max(1, int(tile * (1 - self.overlap)))
        ys, xs = tile_starts(h, th, stride), tile_starts(w, tw, stride)
        weight = torch.from_numpy(ramp_weight(th, tw))
        mask = np.zeros((h, w), np.uint8)
        acc, top = None, 0
        for row, y in enumerate(ys):
            band = torch.zeros(len(self.labels), y + th - top, w) if acc is None else torch.cat(
                [acc, torch.zeros(len(self.labels), y + th - top - acc.shape[1], w)], dim=1)
            for i in range(0, len(xs), self.batch_size):
                chunk = xs[i: i + self.batch_size]
                boxes = [self._letterbox(rgb[y: y + th, x: x + tw], self.imgsz) for x in chunk]
                logits = self._logits(torch.stack([b.tensor for b in boxes]))
                for x, box, lg in zip(chunk, boxes, logits):
                    lg = lg[:, : box.content[0], : box.content[1]]
                    prob = torch.nn.functional.interpolate(lg[None], size=(th, tw), mode="bilinear",
                                                           align_corners=False)[0].softmax(0).cpu()
                    band[:, y - top: y - top + th, x: x + tw] += prob * weight
            done = (ys[row + 1] if row + 1 < len(ys) else h) - top
            mask[top: top + done] = class_map(band[:, :done]).numpy().astype(np.uint8)
            acc, top = band[:, done:], top + done
        return mask

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded]) -> list[list[dict[str, Any]]]:
        import torch

        masks: list[np.ndarray | None] = [None] * len(inputs)
        with torch.inference_mode():
            small = [i for i, x in enumerate(inputs) if x is not None]
            if small:
                logits = self._logits(torch.stack([inputs[i].tensor for i in small]))
                for i, lg in zip(small, logits):
                    masks[i] = self._full_mask(lg, inputs[i].content, decoded[i].height, decoded[i].width)
            for i, x in enumerate(inputs):
                if x is None:
                    masks[i] = self._resize_to(self._tile_mask(decoded[i].rgb), decoded[i])
        self._pending.extend(masks)
        return [class_summary(m, self.labels) for m in masks]

    @staticmethod
    def _resize_to(mask: np.ndarray, decoded: Decoded) -> np.ndarray:
        from PIL import Image

        if mask.shape == (decoded.height, decoded.width):
            return mask
        return np.asarray(Image.fromarray(mask).resize((decoded.width, decoded.height), Image.NEAREST))

    # -- outputs ------------------------------------------------------------------------------
    def annotate(self, decoded: Decoded, record: Record, mask: np.ndarray | None = None) -> Any:
        """The colour overlay on the input at its own size (never an upscaled draft); without ``mask``,
        the record's saved mask PNG. A mask of another size is resized as class indices (nearest)."""
        from PIL import Image

        if mask is None:
            if not record.extra.get("mask"):
                raise RuntimeError(f"{record.path}: no mask to draw")
            mask = np.asarray(Image.open(record.extra["mask"]))
        rgb = decoded.picture()
        if rgb.shape[:2] != mask.shape:
            mask = np.asarray(Image.fromarray(mask).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST))
        return Image.fromarray(overlay(rgb, mask))

    def _check_in_flight(self, batch_size: int, max_pixels: int) -> None:
        """The engine holds two batches of letterboxed inputs: refuse sizes whose product is past the budget."""
        side = -(-self.imgsz // 32) * 32
        values = 3 * side * side * 2 * max(1, batch_size)
        budget = value_budget(max_pixels)
        if values > budget:
            raise UsageError(f"--imgsz {self.imgsz} with --batch-size {batch_size}: {2 * max(1, batch_size)} inputs "
                             f"in flight would hold {values:,} values, over the budget of {budget:,} "
                             f"(from --max-pixels {max_pixels:,}); lower --batch-size or --imgsz")

    def masks(self, sources: Any, *, batch_size: int = 8, recursive: bool = False, shard_spec: str | None = None,
              skip: set[str] | None = None, **run_options: Any) -> Iterator[tuple[Record, Decoded | None, Any]]:
        """``(record, decoded, class-index mask)``; ``decoded`` and the mask are ``None`` for a failure."""
        from cnnkit.engine import run
        from cnnkit.io.sources import expand_sources, shard

        if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
            sources = [sources]
        items = shard(expand_sources(sources, recursive=recursive), shard_spec)
        if skip:
            items = [it for it in items if it.path not in skip]
        self._check_in_flight(batch_size, run_options.get("max_pixels", DEFAULT_MAX_PIXELS))
        self.batch_size = batch_size
        self._pending.clear()
        for record, decoded in run(self, items, batch_size=batch_size, **run_options):
            yield record, decoded, (self._pending.popleft() if decoded is not None else None)

    def stream(self, sources: Any, *, save_dir: str | os.PathLike | None = None, **kwargs: Any) -> Iterator[Record]:
        """Records; with ``save_dir`` each also names its ``mask`` (palette PNG) and ``overlay`` PNG."""
        saver = PictureSaver(save_dir, suffix=".png", inputs=sources) if save_dir else None
        palette = segmentation_palette(len(self.labels))
        for record, decoded, mask in self.masks(sources, pictures=saver is not None, **kwargs):
            if saver is not None and mask is not None:
                record.extra["mask"] = _save_png(saver.target(record.path, "_mask.png"), mask, palette)
                record.extra["overlay"] = _save_png(saver.target(record.path, "_overlay.png"),
                                                    self.annotate(decoded, record, mask))
            yield record


def _save_png(path: Path, image: Any, palette: list[int] | None = None) -> str:
    """Write a PIL image, or a class-index array as a palette PNG, atomically."""
    from PIL import Image

    if palette is not None:
        image = Image.fromarray(image, "L").convert("P")
        image.putpalette(palette)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return str(path)


PREDICTOR = Segmenter
