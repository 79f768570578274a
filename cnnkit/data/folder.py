"""Folder datasets for classification: ``DATA/<class>/*`` or ``DATA/train`` + ``DATA/val``.

Shared by ``cnnkit finetune`` and ``cnnkit classify val``. Every image is decoded once
while scanning (threaded, JPEGs drafted to the size the model needs) so unreadable
files are found up front, skipped and listed, instead of failing mid-epoch.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.errors import OptionError, UsageError, reason_of
from cnnkit.io.sources import files_below, is_image_name

log = logging.getLogger("cnnkit")


@dataclass
class FolderSplit:
    """Image paths and class indices of one split."""

    paths: list[str]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class FolderData:
    """A class-folder dataset: class names, the train and val splits, and the images skipped as unreadable."""

    classes: list[str]
    train: FolderSplit
    val: FolderSplit
    layout: str  # "train/val" (or "train/valid" …, as the split folder is named), or "split"
    skipped: list[tuple[str, str]] = field(default_factory=list)


def class_dirs(root: Path) -> list[str]:
    """The class folders under ``root``, sorted (hidden folders left out)."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path) -> list[str]:
    return [p for p in files_below(folder) if is_image_name(os.path.basename(p))]


def _check(path: str, min_side: int | None) -> str | None:
    from cnnkit.io.decode import decode

    try:
        decode(path, min_side=min_side)
    except Exception as exc:  # any reason a file cannot become an image
        return reason_of(exc, 10_000)
    return None


def scan_classes(
    root: Path,
    classes: list[str] | None = None,
    *,
    verify: bool = True,
    min_side: int | None = None,
    workers: int = 4,
    allow_empty: bool = False,
) -> tuple[list[str], FolderSplit, list[tuple[str, str]]]:
    """``root/<class>/**`` → (classes, split, skipped); a class without readable images is an error unless
    ``allow_empty`` (a val split that lacks some of train's classes)."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    classes = class_dirs(root) if classes is None else classes
    if not classes:
        raise UsageError(f"{root}: no class folders found (expected {root}/<class>/<images>)")
    per_class = [_images(root / c) for c in classes]
    skipped: list[tuple[str, str]] = []
    if verify:
        flat = [p for files in per_class for p in files]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = dict(zip(flat, pool.map(lambda p: _check(p, min_side), flat)))
        skipped = [(p, r) for p, r in reasons.items() if r is not None]
        per_class = [[p for p in files if reasons[p] is None] for files in per_class]
    empty = [c for c, files in zip(classes, per_class) if not files]
    if empty and not allow_empty:
        raise UsageError(f"{root}: class folder(s) without readable images: {', '.join(empty)}")
    paths = [p for files in per_class for p in files]
    targets = [i for i, files in enumerate(per_class) for _ in files]
    return classes, FolderSplit(paths, targets), skipped


def stratified_split(
    split: FolderSplit, val_fraction: float, seed: int, classes: list[str] | None = None
) -> tuple[FolderSplit, FolderSplit]:
    """Per class, a seeded shuffle and ``round(n * val_fraction)`` (at least 1) images to val; ``classes``
    names them in errors."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(split.targets)
    train_idx: list[int] = []
    val_idx: list[int] = []
    single = [int(c) for c in np.unique(targets) if int((targets == c).sum()) < 2]
    if single:  # every such class named at once, not one per attempt
        names = ", ".join(repr(classes[c] if classes and c < len(classes) else str(c)) for c in single)
        raise UsageError(
            f"class {names} has a single image: it cannot be split into train and val"
            if len(single) == 1
            else f"classes {names} have a single image each: they cannot be split into train and val"
        )
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()

    def take(ix: list[int]) -> FolderSplit:
        ix = sorted(ix)
        return FolderSplit([split.paths[i] for i in ix], [split.targets[i] for i in ix])

    return take(train_idx), take(val_idx)


VAL_NAMES = ("val", "valid", "validation", "test")  # DATA/train beside one of these (Roboflow, Kaggle, ultralytics)


def val_beside_train(root: Path) -> Path | None:
    """The first of :data:`VAL_NAMES` that is a folder beside ``root/train``, when that is one."""
    if not (root / "train").is_dir():
        return None
    return next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)


def _other_layout(root: Path) -> tuple[str, str] | None:
    """``(what, task)`` when ``root`` is another task's dataset (as ``cnnkit data shapes --layout`` writes them or
    ultralytics and COCO lay them out), else ``None``."""
    if root.is_file() and root.suffix.lower() in (".yaml", ".yml"):
        return "a detection dataset yaml", "detect"
    made = root / "cnnkit-data.json"
    if made.is_file():
        try:
            layout = json.loads(made.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            layout = None
        task = {"yolo": "detect", "masks": "segment", "coco": "instance"}.get(layout)
        if task is not None:
            return f"a {layout} dataset (its cnnkit-data.json says so)", task
    for d in (root, root / "train"):
        if (d / "images").is_dir() and (d / "masks").is_dir():
            return "images/ and masks/ (a segmentation dataset)", "segment"
        if (d / "images").is_dir() and (d / "labels").is_dir():
            return "images/ and labels/ (a YOLO dataset)", "detect"
        if (d / "annotations.json").is_file():
            return "COCO annotations.json (an instance dataset)", "instance"
    return None


def load_folder_dataset(
    root: str | os.PathLike, *, val_split: float = 0.2, seed: int = 0, min_side: int | None = None, workers: int = 4
) -> FolderData:
    """Scan a classification dataset; errors name the folder and what is wrong."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: dataset folder not found")
    other = _other_layout(root)
    if other is not None:  # its `images`, `masks`, `labels` folders would be trained as classes, exit 0
        raise UsageError(f"{root}: {other[0]}, not class folders; train it with `task` {other[1]}")
    val_dir = val_beside_train(root)
    if val_dir is not None:
        classes, train, skipped = scan_classes(root / "train", min_side=min_side, workers=workers)
        # a name is one class however its accents are stored: macOS writes folder names decomposed (NFD), Linux
        # as typed (NFC), so a dataset copied from one to the other has `café` twice, spelled apart
        val_classes = {unicodedata.normalize("NFC", c): c for c in class_dirs(val_dir)}
        only_val = sorted(set(val_classes) - {unicodedata.normalize("NFC", c) for c in classes})
        if only_val:  # images of classes the model would never be trained on
            raise UsageError(f"{root}: {val_dir.name} has class folders train lacks: {', '.join(only_val)}")
        folders = [val_classes.get(unicodedata.normalize("NFC", c), c) for c in classes]  # in train's order
        _, val, skipped_val = scan_classes(val_dir, folders, min_side=min_side, workers=workers, allow_empty=True)
        unseen = [c for i, c in enumerate(classes) if i not in set(val.targets)]
        if len(unseen) == len(classes):
            raise UsageError(f"{val_dir}: no readable images in any class folder")
        if unseen:  # a small split: trained on, not scored
            log.warning("%s has no images of %s: those classes are trained, not scored", val_dir, ", ".join(unseen))
        data = FolderData(classes, train, val, f"train/{val_dir.name}", skipped + skipped_val)
    else:
        if not 0.0 < val_split < 1.0:
            raise OptionError(
                "val_split", "expected a fraction above 0 (the images to score on) and below 1", val_split
            )
        # DATA/train alone: its class folders are split (its name is not a class)
        where = root / "train" if (root / "train").is_dir() and class_dirs(root / "train") else root
        classes, full, skipped = scan_classes(where, min_side=min_side, workers=workers)
        train, val = stratified_split(full, val_split, seed, classes)
        data = FolderData(classes, train, val, "split", skipped)
    if len(data.classes) < 2:
        raise UsageError(f"{root}: only one class ({data.classes[0]}); classification needs at least two")
    return data


def describe_skipped(skipped: list[tuple[str, str]], limit: int = 10) -> str:
    """A short report of unreadable images: the first ``limit`` with their reasons, and how many more."""
    lines = [f"skipped {len(skipped)} unreadable image(s):"] + [f"  {p}: {r}" for p, r in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  … and {len(skipped) - limit} more")
    return "\n".join(lines)
