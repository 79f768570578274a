"""Typed results: what a predictor found in one image, as objects that serialise, draw and save themselves.

In the spirit of ultralytics' ``Results`` (``Probs``, ``Boxes``, ``Masks``): a predictor's
``predict_batch`` returns one :class:`Result` per image, the engine puts it on the
:class:`~cnnkit.records.Record` (``record.result``) and its :meth:`Result.predictions` become the
record's plain predictions. Everything a run saves per image (the annotated picture, YOLO label
files, crops, mask PNGs) is drawn or written from the result, so no mask or box waits on the
predictor between the forward pass and the save: one predictor can serve two streams at once.

Only the standard library is imported here; numpy, Pillow and torch are imported by the methods
that need them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from cnnkit.io.pictures import PictureSaver


class Result(ABC):
    """One image's output for one task."""

    @abstractmethod
    def predictions(self) -> list[dict[str, Any]]:
        """The record's ``predictions``: plain JSON types, keys as README's "Output schema" says."""

    @abstractmethod
    def draw(self, picture: np.ndarray) -> Image:
        """The annotated picture, drawn on ``picture`` (the input at its own size, RGB uint8)."""


# -- classification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassScore:
    """One of the top-k classes of an image."""

    label: str
    class_id: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "score": self.score}


@dataclass
class Classes(Result):
    """Top-k classes, highest score first."""

    top: list[ClassScore]
    shown: int = 3  # lines drawn on a picture

    def predictions(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.top]

    def draw(self, picture: np.ndarray) -> Image:
        from cnnkit.io.draw import draw_caption

        return draw_caption(picture, [f"{c.label} {c.score:.2f}" for c in self.top[: self.shown]])


# -- boxes (detection, and the boxes of instances) ---------------------------------------------


@dataclass(frozen=True)
class Box:
    """One detection: ``box`` is ``(x1, y1, x2, y2)`` in the input's own pixels."""

    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "score": self.score, "box": list(self.box)}

    @property
    def caption(self) -> str:
        """The tag drawn on the box."""
        return f"{self.label} {self.score:.2f}"

    @property
    def colour_key(self) -> int:
        """Which palette colour the box gets: its class (a tracked box: its track)."""
        return self.class_id


@dataclass(frozen=True)
class TrackedBox(Box):
    """A detection that a tracker linked across frames: ``track_id`` is stable for one object in one video."""

    track_id: int = 0
    crossed: str | None = None  # "in" or "out" on the frame the track crossed the count line

    def to_dict(self) -> dict[str, Any]:
        data = {**super().to_dict(), "track_id": self.track_id}
        if self.crossed is not None:
            data["crossed"] = self.crossed
        return data

    @property
    def caption(self) -> str:
        return f"#{self.track_id} {self.label} {self.score:.2f}"

    @property
    def colour_key(self) -> int:
        return self.track_id


def crop_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """A box (original pixels) as the whole-pixel region ``--save-crop`` cuts: each edge rounded."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return x1, y1, x2, y2


@dataclass
class Boxes(Result):
    """Detections in an image of ``width`` × ``height`` pixels."""

    items: list[Box]
    width: int
    height: int

    def predictions(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.items]

    def draw(self, picture: np.ndarray) -> Image:
        """A coloured box and a ``label score`` tag per detection (Pillow's built-in font)."""
        from PIL import Image, ImageDraw

        from cnnkit.io.draw import _font, colour

        img = Image.fromarray(picture)
        draw = ImageDraw.Draw(img, "RGBA")
        width = max(1, min(img.size) // 160)
        font = _font(max(10, min(img.size) // 28))
        for b in self.items:
            x1, y1, x2, y2 = b.box
            c = colour(b.colour_key)
            draw.rectangle((x1, y1, x2, y2), outline=c, width=width)
            text = b.caption
            l, t, r, bottom = draw.textbbox((x1, y1), text, font=font)
            ty = y1 - (bottom - t) - 3 if y1 - (bottom - t) - 3 >= 0 else y1
            draw.rectangle((x1, ty, x1 + (r - l) + 4, ty + (bottom - t) + 3), fill=(*c, 200))
            draw.text((x1 + 2, ty - (t - y1) + 1), text, fill=(255, 255, 255), font=font)
        return img

    def save_txt(self, saver: PictureSaver, source_path: str, *, conf: bool = False, tag: str = "") -> Path:
        """``labels/<stem><tag>.txt``: one ``class cx cy w h`` line per box, normalised, as ultralytics' ``save_txt``
        writes and its dataset reader takes; ``conf`` appends the score (``save_conf``: no longer a label file), and
        a tracked box its track id last, as ``yolo track save_txt=True`` does; ``tag`` tells a video's frames apart
        (``_12`` for frame 12, as ultralytics names them)."""
        from cnnkit.io.files import atomic_write_text

        path = saver.target(source_path, ".txt", sub="labels", tag=tag)
        w, h = self.width, self.height
        lines = []
        for b in self.items:
            x1, y1, x2, y2 = b.box
            lines.append(
                f"{b.class_id} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                + (f" {b.score:.6f}" if conf else "")
                + (f" {track}\n" if (track := getattr(b, "track_id", None)) is not None else "\n")
            )
        atomic_write_text(path, "".join(lines))
        return path

    def save_crops(self, saver: PictureSaver, source_path: str, picture: np.ndarray, *, tag: str = "") -> list[Path]:
        """``crops/<label>/<stem><tag>_<i>.jpg``: each detection cut from ``picture`` at its box rounded to whole
        pixels (:func:`crop_box`); an empty region is skipped."""
        from PIL import Image

        from cnnkit.io.pictures import safe_name

        img = Image.fromarray(picture)
        paths = []
        for i, b in enumerate(self.items):
            x1, y1, x2, y2 = crop_box(b.box)
            if x2 <= x1 or y2 <= y1:
                continue
            paths.append(
                Path(
                    saver.save(
                        img.crop((x1, y1, x2, y2)),
                        source_path,
                        ".jpg",
                        sub=f"crops/{safe_name(b.label)}",
                        tag=f"{tag}_{i}",
                    )
                )
            )
        return paths


@dataclass
class Tracks(Boxes):
    """One video frame's tracked boxes, and with a count line (or region) the running ``{in, out}`` counts."""

    line: tuple[float, float, float, float] | None = None
    counts: dict[str, int] | None = None
    region: tuple[tuple[float, float], ...] | None = None  # a count region's corners

    def draw(self, picture: np.ndarray) -> Image:
        """Boxes with ``#id label score``, and the count line or region with its counts."""
        from PIL import ImageDraw

        from cnnkit.io.draw import _font

        img = super().draw(picture)
        if self.line is not None or self.region is not None:
            draw = ImageDraw.Draw(img)
            width = max(1, min(img.size) // 128)
            if self.line is not None:
                draw.line(self.line, fill=(255, 255, 255), width=width)
            if self.region is not None:
                draw.polygon(list(self.region), outline=(255, 255, 255), width=width)
            if self.counts is not None:
                font = _font(max(10, min(img.size) // 20))
                text = f"in {self.counts['in']}  out {self.counts['out']}"
                l, t, r, b = draw.textbbox((4, 4), text, font=font)
                draw.rectangle((l - 2, t - 2, r + 2, b + 2), fill=(0, 0, 0))
                draw.text((4, 4), text, fill=(255, 255, 255), font=font)
        return img


# -- instances: boxes with masks ---------------------------------------------------------------


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """H×W bool → COCO RLE ``{size: [h, w], counts: str}``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (counts as str or bytes) → H×W bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return (
        mask_utils.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}) > 0
    )


@dataclass(frozen=True)
class Instance(Box):
    """A detection with its mask, COCO RLE in the input's own pixels."""

    mask: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "mask": self.mask}


@dataclass
class Instances(Boxes):
    """Instances: boxes, labels, scores and masks."""

    items: list[Instance]  # type: ignore[assignment]  # narrower than Boxes' list[Box]

    def draw(self, picture: np.ndarray) -> Image:
        """Translucent masks, then boxes with ``label score`` captions (torchvision's drawing utilities)."""
        import numpy as np
        import torch
        from PIL import Image
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        from cnnkit.io.draw import colour

        img = torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1)
        if self.items:
            colours = [colour(p.colour_key) for p in self.items]
            masks = torch.from_numpy(np.stack([decode_rle(p.mask) for p in self.items]))
            img = draw_segmentation_masks(img, masks, alpha=0.45, colors=colours)
            img = draw_bounding_boxes(
                img,
                torch.tensor([list(p.box) for p in self.items]),
                colors=colours,
                width=2,
                labels=[p.caption for p in self.items],
            )
        return Image.fromarray(img.permute(1, 2, 0).numpy())

    def save_masks(self, saver: PictureSaver, source_path: str, *, tag: str = "") -> list[str]:
        """``masks/<stem><tag>_<i>_<label>.png``: one black-and-white PNG per instance, in prediction order."""
        from PIL import Image

        from cnnkit.io.pictures import safe_name

        return [
            saver.save(
                Image.fromarray(decode_rle(p.mask).astype("uint8") * 255),
                source_path,
                ".png",
                sub="masks",
                tag=f"{tag}_{i}_{safe_name(p.label)}",
            )
            for i, p in enumerate(self.items)
        ]


# -- semantic segmentation: a class per pixel --------------------------------------------------


@dataclass(frozen=True)
class TrackedInstance(TrackedBox, Instance):
    """An instance (box and mask) that a tracker linked across frames, as :class:`TrackedBox`."""


@dataclass
class TrackedInstances(Tracks, Instances):
    """One video frame's tracked instances: masks and ``#id`` captions, and the count line as :class:`Tracks`."""

    items: list[TrackedInstance]  # type: ignore[assignment]  # narrower than Instances' list[Instance]


def class_summary(mask: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """The classes present in ``mask``, most pixels first."""
    import numpy as np

    counts = np.bincount(mask.ravel(), minlength=len(labels))
    total = max(int(mask.size), 1)
    order = sorted((int(i) for i in np.nonzero(counts)[0]), key=lambda i: -counts[i])
    return [
        {
            "label": labels[i] if i < len(labels) else f"class_{i}",
            "class_id": i,
            "pixels": int(counts[i]),
            "fraction": round(float(counts[i]) / total, 6),
        }
        for i in order
    ]


def overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with every non-background pixel tinted by its class colour."""
    import numpy as np

    from cnnkit.io.draw import colour

    lut = np.array([(0, 0, 0)] + [colour(i) for i in range(255)], np.float32)
    tint = lut[mask]
    fg = (mask > 0)[..., None]
    return np.where(fg, rgb * (1 - alpha) + tint * alpha, rgb).astype(np.uint8)


def segmentation_palette(num_classes: int) -> list[int]:
    """PNG palette: class 0 black, class ``i`` the drawing colour ``i - 1``."""
    from cnnkit.data.export import mask_palette

    return mask_palette(min(num_classes, 256) - 1)


@dataclass
class SegmentMask(Result):
    """A class index per pixel (H×W uint8, the input's own size) and the model's labels.

    ``classes``: the class ids kept (the predictor's ``classes`` option; ``None``: all). Pixels of other
    classes are background in the mask, and only kept classes are listed, so records, overlays and saved
    masks agree.
    """

    mask: np.ndarray = field(repr=False)
    labels: Sequence[str]
    classes: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            import numpy as np

            self.mask = np.where(np.isin(self.mask, sorted(self.classes)), self.mask, 0).astype(self.mask.dtype)

    def predictions(self) -> list[dict[str, Any]]:
        found = class_summary(self.mask, self.labels)
        return found if self.classes is None else [p for p in found if p["class_id"] in self.classes]

    def draw(self, picture: np.ndarray) -> Image:
        """The colour overlay; a mask of another size is resized as class indices (nearest)."""
        import numpy as np
        from PIL import Image

        mask = self.mask
        if picture.shape[:2] != mask.shape:
            mask = np.asarray(
                Image.fromarray(mask).resize((picture.shape[1], picture.shape[0]), Image.Resampling.NEAREST)
            )
        return Image.fromarray(overlay(picture, mask))

    def save(self, saver: PictureSaver, source_path: str, picture: np.ndarray) -> dict[str, str]:
        """``<stem>_mask.png`` (palette PNG of class indices) and ``<stem>_overlay.png``; their paths."""
        from PIL import Image

        indexed = Image.fromarray(self.mask, "L").convert("P")
        indexed.putpalette(segmentation_palette(len(self.labels)))
        return {
            "mask": saver.save(indexed, source_path, "_mask.png"),
            "overlay": saver.save(self.draw(picture), source_path, "_overlay.png"),
        }
