"""Semantic segmentation: a class index per pixel, the classes present, masks and overlays.

Small images are letterboxed to the model size (aspect kept, padded to a multiple
of 32) and the logits resized back; with ``tile`` an image larger than the tile is
cut into overlapping windows whose class probabilities are blended with a ramp
weight. Tiles are processed one row band at a time and finished rows are reduced
to class indices at once, so memory grows with the image width, not its area.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.config import MAX_IMGSZ, MAX_TILE
from cnnkit.device import Runtime
from cnnkit.engine import Predictor, StreamState, resolve_classes
from cnnkit.errors import OptionError, UsageError
from cnnkit.io.decode import Decoded, check_budget, draft_side
from cnnkit.io.pictures import PictureSaver
from cnnkit.models.loader import Loaded
from cnnkit.records import Record
from cnnkit.results import SegmentMask, class_summary, overlay, segmentation_palette
from cnnkit.tasks.segment.val import class_map

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["Segmenter", "class_summary", "overlay", "ramp_weight", "segmentation_palette", "tile_starts"]

# Above this many logit values an image's mask is resized as class indices, not as logits.
_MAX_LOGITS = 1 << 25


@dataclass
class _Letterbox:
    """A resized, padded image and where its content sits in the padded tensor."""

    tensor: Any
    content: tuple[int, int]  # height, width of the resized image inside the padding


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
    """A class per pixel; with a save folder, the class-index mask and colour overlay PNGs per input."""

    task = "segment"
    picture_suffix = ".png"

    @property
    def reads_pixels(self) -> bool:
        """A tiled run cuts its windows from the picture in :meth:`predict_batch`."""
        return self.tile is not None

    def __init__(
        self,
        loaded: Loaded,
        runtime: Runtime,
        imgsz: int | None = None,
        tile: int | None = None,
        overlap: float = 0.25,
        classes: Sequence[int | str] | None = None,
    ) -> None:
        if loaded.preprocess is None:
            raise UsageError(f"{loaded.name}: no preprocessing is known")
        if not 0.0 <= overlap < 0.9:
            raise OptionError("overlap", "expected a fraction in [0, 0.9)", overlap)
        self.loaded, self.name, self.labels = loaded, loaded.name, list(loaded.labels)
        self.pre, self.runtime = loaded.preprocess, runtime.for_module(loaded.runtime)
        self.imgsz = int(imgsz or self.pre.crop)
        if not 32 <= self.imgsz <= MAX_IMGSZ:
            raise OptionError("imgsz", f"must be from 32 to {MAX_IMGSZ}", self.imgsz)
        self.tile = int(tile) if tile else None
        if self.tile is not None and not 32 <= self.tile <= MAX_TILE:
            raise OptionError("tile", f"must be from 32 to {MAX_TILE}", self.tile)
        self.overlap = overlap
        kept = resolve_classes(classes, self.labels)
        self.classes = None if kept is None else frozenset(kept)
        self.min_side = None if self.tile else draft_side(self.imgsz)
        # torchvision's segmenters take the image as their weights' transforms() make it: the short side
        # resized to the preset's size and nothing padded (a pad reaches DeepLabV3's image pooling)
        self.short_side = loaded.spec is not None and loaded.spec.source == "torchvision"
        self.model = self.runtime.prepare(loaded.module)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        arch: str | None = None,
        encoder: str | None = None,
        imgsz: int | None = None,
        tile: int | None = None,
        overlap: float = 0.25,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        backend: str | None = None,
        classes: Sequence[int | str] | None = None,
    ) -> Segmenter:
        """``classes`` (ids or names) keeps only those classes: other pixels become background."""
        from cnnkit.models.loader import resolve
        from cnnkit.runtimes import default_backend

        runtime = Runtime.create(device, half=half, threads=threads)
        loaded = resolve(
            "segment",
            model,
            weights,
            backend=default_backend(backend, weights),
            device=runtime.device,
            arch=arch,
            encoder=encoder,
        )
        return cls(loaded, runtime, imgsz, tile, overlap, classes)

    # -- preprocessing (decode threads) ---------------------------------------------------------
    def _tiled(self, decoded: Decoded) -> bool:
        return self.tile is not None and max(decoded.rgb.shape[:2]) > self.tile

    def _normalise(self, rgb: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(self.pre.mean).view(3, 1, 1)
        std = torch.tensor(self.pre.std).view(3, 1, 1)
        return (t - mean) / std

    @staticmethod
    def _resized(decoded: Decoded, nw: int, nh: int) -> np.ndarray:
        """``decoded`` resized to ``nw`` × ``nh`` on the original's geometry (a draft read through PIL's ``box``:
        rounding the draft's own size shifted the picture by up to a pixel)."""
        from PIL import Image

        rgb = decoded.rgb
        if (nh, nw) == rgb.shape[:2] and not decoded.drafted:
            return rgb
        sx, sy = decoded.scale
        box = (0.0, 0.0, decoded.width / sx, decoded.height / sy)
        return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR, box=box))

    def _letterbox(self, decoded: Decoded, size: int) -> _Letterbox:
        """Resize the longer side to ``size`` and zero-pad (= the mean) to a multiple of 32."""
        import torch

        h, w = decoded.height, decoded.width
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        rgb = self._resized(decoded, nw, nh)
        side = -(-size // 32) * 32
        out = torch.zeros(3, side, side)
        out[:, :nh, :nw] = self._normalise(rgb)
        return _Letterbox(out, (nh, nw))

    def _short_side(self, decoded: Decoded, size: int) -> _Letterbox:
        """The short side resized to ``size`` and the long one to int(size × long / short), as torchvision's
        Resize(int), unpadded."""
        h, w = decoded.height, decoded.width
        nh, nw = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
        return _Letterbox(self._normalise(self._resized(decoded, nw, nh)), (nh, nw))

    def preprocess(self, decoded: Decoded) -> _Letterbox | None:
        """The letterboxed tensor; ``None`` for an image to tile (in :meth:`predict_batch`), whose
        memory is checked here: a band of class scores as wide as the image, and each tile's."""
        if not self._tiled(decoded):
            h, w = decoded.height, decoded.width
            if self.short_side and max(h, w) <= 4 * min(h, w):  # a thinner image would grow without bound
                return self._short_side(decoded, self.imgsz)
            return self._letterbox(decoded, self.imgsz)
        h, w = decoded.rgb.shape[:2]
        th, tw = min(self.tile, h), min(self.tile, w)
        classes = len(self.labels)
        check_budget(
            decoded,
            (2 * classes + 3) * th * w + classes * th * tw,
            f"tiling with `tile` {self.tile} ({classes} class scores per pixel of a {th}-row band)",
        )
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

    def _full_mask(self, logits: Any, content: tuple[int, int], decoded: Decoded) -> np.ndarray:
        """Crop the padding, resize to the original's pixels (the content is the original's geometry, drafted or
        not) and take the class index."""
        import torch
        import torch.nn.functional as F
        from PIL import Image

        logits = logits[:, : content[0], : content[1]]
        height, width = ch, cw = decoded.height, decoded.width
        if logits.shape[0] * ch * cw <= _MAX_LOGITS:
            up = F.interpolate(logits[None], size=(ch, cw), mode="bilinear", align_corners=False)
            return class_map(up[0]).to(torch.uint8).cpu().numpy()[:height, :width]
        small = class_map(logits).to(torch.uint8).cpu().numpy()
        return np.asarray(Image.fromarray(small).resize((cw, ch), Image.Resampling.NEAREST))[:height, :width]

    def _tile_mask(self, rgb: np.ndarray, batch_size: int) -> np.ndarray:
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
            band = (
                torch.zeros(len(self.labels), y + th - top, w)
                if acc is None
                else torch.cat([acc, torch.zeros(len(self.labels), y + th - top - acc.shape[1], w)], dim=1)
            )
            for i in range(0, len(xs), batch_size):
                chunk = xs[i : i + batch_size]
                tiles = [rgb[y : y + th, x : x + tw] for x in chunk]
                boxes = [self._letterbox(Decoded("", t, t.shape[1], t.shape[0]), self.imgsz) for t in tiles]
                logits = self._logits(torch.stack([b.tensor for b in boxes]))
                for x, box, lg in zip(chunk, boxes, logits):
                    lg = lg[:, : box.content[0], : box.content[1]]
                    prob = (
                        torch.nn.functional.interpolate(lg[None], size=(th, tw), mode="bilinear", align_corners=False)[
                            0
                        ]
                        .softmax(0)
                        .cpu()
                    )
                    band[:, y - top : y - top + th, x : x + tw] += prob * weight
            done = (ys[row + 1] if row + 1 < len(ys) else h) - top
            mask[top : top + done] = class_map(band[:, :done]).numpy().astype(np.uint8)
            acc, top = band[:, done:], top + done
        return mask

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> list[SegmentMask]:
        """Letterboxed inputs in one forward pass; each image to tile on its own, ``state.batch_size`` tiles
        at a time."""
        import torch

        from cnnkit.models.preprocess import by_shape

        masks: list[np.ndarray | None] = [None] * len(inputs)
        with torch.inference_mode():
            small = [i for i, x in enumerate(inputs) if x is not None]
            for group in by_shape([inputs[i].tensor for i in small]):  # unpadded inputs differ in shape
                batch = [small[g] for g in group]
                logits = self._logits(torch.stack([inputs[i].tensor for i in batch]))
                for i, lg in zip(batch, logits):
                    masks[i] = self._full_mask(lg, inputs[i].content, decoded[i])
            for i, x in enumerate(inputs):
                if x is None:
                    masks[i] = self._resize_to(self._tile_mask(decoded[i].rgb, state.batch_size), decoded[i])
        return [SegmentMask(m, self.labels, self.classes) for m in masks if m is not None]

    @staticmethod
    def _resize_to(mask: np.ndarray, decoded: Decoded) -> np.ndarray:
        from PIL import Image

        if mask.shape == (decoded.height, decoded.width):
            return mask
        (ch, cw), (h, w) = decoded.covered, (decoded.height, decoded.width)
        return np.asarray(Image.fromarray(mask).resize((cw, ch), Image.Resampling.NEAREST))[:h, :w]

    # -- outputs ------------------------------------------------------------------------------
    def annotate(self, decoded: Decoded, record: Record) -> PIL.Image.Image:
        """The colour overlay on the input at its own size (never an upscaled draft): the record's result,
        or for a record read back without one, its saved mask PNG."""
        if record.result is None and record.extra.get("mask"):
            from PIL import Image

            with Image.open(record.extra["mask"]) as png:
                return SegmentMask(np.asarray(png), self.labels).draw(decoded.picture())
        return super().annotate(decoded, record)

    def save_outputs(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """``mask`` (palette PNG of class indices) and ``overlay`` PNG, named in the record."""
        result = record.result
        assert isinstance(result, SegmentMask)
        record.extra.update(result.save(saver, record.path, decoded.picture()))

    @property
    def input_side(self) -> int:
        """Letterboxed to ``imgsz``, padded to a multiple of 32 (a tiled run's windows are smaller)."""
        return -(-self.imgsz // 32) * 32

    def masks(self, sources: Any, **run_options: Any) -> Iterator[tuple[Record, np.ndarray | None]]:
        """``(record, class-index mask)`` per input (``None`` for a failure): :meth:`stream`'s records with
        ``record.result.mask`` beside them, for evaluation."""
        for record in self.stream(sources, **run_options):
            yield record, record.result.mask if isinstance(record.result, SegmentMask) else None


PREDICTOR = Segmenter
