"""Write ``shapes`` scenes (or digits) to disk in the formats the tools expect.

* ``imagefolder``: ``OUT/{train,val}/<class>/*.png`` (single-object images)
* ``yolo``: ``OUT/images/{train,val}``, ``OUT/labels/{train,val}`` and ``OUT/data.yaml``
* ``masks``: ``OUT/{train,val}/images/*.png`` + ``OUT/{train,val}/masks/*.png`` (class-index PNG, 0 = background)
* ``coco``: ``OUT/{train,val}/images`` + ``OUT/{train,val}/annotations.json`` (RLE instance masks)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnkit.data import shapes
from cnnkit.io.files import atomic_path, atomic_write_text

FORMATS = ("imagefolder", "yolo", "masks", "coco")


def _split_counts(n: int, val_fraction: float) -> dict[str, int]:
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    return {"train": n - n_val, "val": n_val}


def _class_folder(out: Path, split: str, val_fraction: float) -> Path:
    """Where a split's class folders go: ``OUT/<split>``, or ``OUT`` itself without a val split, which
    finetune then carves from it (a lone ``train/`` folder would read as a class)."""
    return out / split if val_fraction > 0 else out


def _save_png(path: Path, arr: np.ndarray | Image.Image, palette: list[int] | None = None) -> None:
    """A PNG written whole or not at all, replacing what is at ``path`` (a symlink itself, never its target)."""
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    if palette is not None:
        img = img.convert("P")
        img.putpalette(palette)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def mask_palette(n_classes: int) -> list[int]:
    """A PNG palette for class-index masks: black background, then the drawing colours."""
    from cnnkit.io.draw import colour

    pal = [0, 0, 0]
    for i in range(n_classes):
        pal += list(colour(i))
    return pal + [0] * (768 - len(pal))


def export_shapes(
    out: str | Path,
    fmt: str,
    n: int,
    seed: int = 0,
    imgsz: int = 256,
    val_fraction: float = 0.2,
    progress: Callable[[int], None] | None = None,
    photo_fraction: float = 0.0,
) -> dict[str, Any]:
    """Generate ``n`` examples from ``seed`` into ``out``; returns a summary dict.

    ``photo_fraction`` > 0 draws that share of the scenes over crops of real photos
    (:mod:`cnnkit.data.photos`, needs scikit-image), with 0 to 4 shapes, so some have none.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    out = Path(out)
    _drop_earlier_export(out)
    counts = _split_counts(n, val_fraction)
    index = 0
    summary: dict[str, Any] = {"format": fmt, "out": str(out), "seed": seed, "classes": list(shapes.CLASSES)}
    scene_options: dict[str, Any] = {}
    if photo_fraction > 0:
        from cnnkit.data.photos import train_pool

        scene_options = {"photos": train_pool(), "photo_fraction": photo_fraction, "objects": (0, 4)}
        summary["photo_fraction"] = photo_fraction
    for split, count in counts.items():
        coco = _CocoBuilder() if fmt == "coco" else None
        for _ in range(count):
            name = f"{split}_{index:06d}.png"
            if fmt == "imagefolder":
                img, cid = shapes.classification_sample(seed, index, size=imgsz)
                _save_png(_class_folder(out, split, val_fraction) / shapes.CLASSES[cid] / name, img)
            else:
                sc = shapes.scene(seed, index, size=imgsz, **scene_options)
                if fmt == "yolo":
                    _save_yolo(out, split, name, sc.image, [(o.class_id, o.box) for o in sc.objects])
                elif fmt == "masks":
                    _save_png(out / split / "images" / name, sc.image)
                    _save_png(out / split / "masks" / name, sc.semantic, mask_palette(len(shapes.CLASSES)))
                else:
                    _save_png(out / split / "images" / name, sc.image)
                    assert coco is not None  # fmt == "coco"
                    coco.add(name, sc)
            index += 1
            if progress:
                progress(1)
        if coco is not None:
            atomic_write_text(out / split / "annotations.json", json.dumps(coco.data))
        summary[split] = count
    if fmt == "yolo":
        _write_data_yaml(out)
    atomic_write_text(out / "cnnkit-data.json", json.dumps(summary, indent=2) + "\n")
    return summary


# the files export_shapes and export_digits name
EXPORTED_NAME = re.compile(r"(train|val)_[0-9]{6}\.(png|txt)|digit_[0-9]{4}\.png")


def _drop_earlier_export(out: Path) -> None:
    """Written again into the folder of an earlier export (``exist_ok``), the files that export made and this one
    may not (another count or split: scene 9 once in train, now in val) go first, so no stale picture is
    trained on; only files of its own names, in a folder its summary file marks as one, are removed."""
    if not (out / "cnnkit-data.json").is_file():
        return
    for folder, _, names in os.walk(out):
        for name in names:
            if EXPORTED_NAME.fullmatch(name):
                Path(folder, name).unlink()


def _write_data_yaml(out: Path, extra_train: list[Path] | None = None) -> None:
    """``data.yaml`` without a ``path``: its folder is the dataset root (for cnnkit and ultralytics alike), so a
    copied or moved dataset reads its own images; YAML's own writer quotes what needs quoting."""
    import yaml

    train: str | list[str] = "images/train" if not extra_train else ["images/train", *map(str, extra_train)]
    text = yaml.safe_dump(
        {"train": train, "val": "images/val", "names": dict(enumerate(shapes.CLASSES))},
        sort_keys=False,
        allow_unicode=True,
    )
    atomic_write_text(out / "data.yaml", text)


PARTLY_HIDDEN = 0.8  # a labelled shape with less of it in view than this is one the detector finds hard


def export_moving_frames(
    out: str | Path,
    n: int,
    seed: int = 0,
    every: int = 3,
    frames: int = 60,
    min_visibility: float = 0.3,
    val_fraction: float = 0.1,
    extra_train: list[Path] | None = None,
    hidden_every: int = 0,
) -> dict[str, Any]:
    """Every ``every``-th frame of ``n`` moving-shape sequences (:func:`cnnkit.data.moving.sequence`) as a
    YOLO dataset: shapes crossing, half hidden, entering and leaving, the frames a tracker's detector
    must handle. A shape is labelled (its visible box) when at least ``min_visibility`` of it shows;
    ``extra_train`` adds image folders (another YOLO dataset's ``images/train``) to the training split.
    ``hidden_every`` also takes every ``hidden_every``-th frame in which a labelled shape is partly hidden
    (under :data:`PARTLY_HIDDEN` of it in view): the shapes a tracker loses are those, and every third frame
    holds few of them."""
    from cnnkit.data.moving import sequence

    out = Path(out)
    counts = _split_counts(n, val_fraction)
    index = 0
    summary: dict[str, Any] = {"format": "yolo", "out": str(out), "seed": seed, "classes": list(shapes.CLASSES)}
    for split, count in counts.items():
        images = 0
        for _ in range(count):
            seq = sequence(seed, index, frames=frames)
            for t, (rgb, gt) in enumerate(seq.frames()):
                labelled = [g for g in gt if g.visibility >= min_visibility]
                hidden = hidden_every and t % hidden_every == 0 and any(g.visibility < PARTLY_HIDDEN for g in labelled)
                if t % every and not hidden:
                    continue
                boxes = [(g.class_id, g.box) for g in labelled]
                _save_yolo(out, split, f"{split}_{index:04d}_{t:04d}.png", rgb, boxes)
                images += 1
            index += 1
        summary[split] = images
    _write_data_yaml(out, extra_train)
    atomic_write_text(out / "cnnkit-data.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _save_yolo(
    out: Path, split: str, name: str, image: np.ndarray, boxes: list[tuple[int, tuple[int, int, int, int]]]
) -> None:
    """One YOLO example: ``images/SPLIT/NAME`` and its ``labels/SPLIT/*.txt`` (class, centre and size, 0–1)."""
    _save_png(out / "images" / split / name, image)
    h, w = image.shape[:2]
    lines = [
        f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n"
        for c, (x1, y1, x2, y2) in boxes
    ]
    atomic_write_text(out / "labels" / split / name.replace(".png", ".txt"), "".join(lines))


class _CocoBuilder:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(shapes.CLASSES)],
        }

    def add(self, file_name: str, sc: shapes.Scene) -> None:
        from pycocotools import mask as mask_utils

        h, w = sc.image.shape[:2]
        image_id = len(self.data["images"]) + 1
        self.data["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for obj in sc.objects:
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            x1, y1, x2, y2 = obj.box
            self.data["annotations"].append(
                {
                    "id": len(self.data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": obj.class_id + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(obj.mask.sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                }
            )


def export_digits(out: str | Path, val_fraction: float = 0.2, seed: int = 0, size: int = 32) -> dict[str, Any]:
    """scikit-learn's 1,797 real 8×8 handwritten digits as ``OUT/{train,val}/<digit>/*.png``.

    Upscaled to ``size`` px (grey, 0–16 → 0–255); the split is stratified and seeded.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    out = Path(out)
    _drop_earlier_export(out)  # another seed or split: a digit once in train, now in val, is not in both
    counts = {"train": 0, "val": 0}
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        for j, i in enumerate(idx):
            split = "val" if j < n_val else "train"
            arr = (digits.images[i] / 16.0 * 255).astype(np.uint8)
            img = Image.fromarray(arr, "L").resize((size, size), Image.Resampling.BILINEAR)
            _save_png(_class_folder(out, split, val_fraction) / str(label) / f"digit_{i:04d}.png", img)
            counts[split] += 1
    summary = {"format": "imagefolder", "out": str(out), "source": "sklearn.datasets.load_digits", **counts}
    atomic_write_text(out / "cnnkit-data.json", json.dumps(summary, indent=2) + "\n")
    return summary
