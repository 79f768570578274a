"""Read a COCO-format instance dataset (as ``cnnkit data shapes OUT --layout coco`` writes it).

Accepted layouts for ``DATA``: ``DATA/<split>/annotations.json`` with ``DATA/<split>/images``;
``DATA/annotations.json`` with ``DATA/images``; or the annotations JSON file itself, its images
in an ``images`` folder beside it (or beside the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError


@dataclass
class CocoSplit:
    """Ground truth of one split; ``class_id`` ``i`` is category ``cat_ids[i]`` called ``labels[i]``."""

    annotations: Path
    images_dir: Path
    gt: dict[str, Any]
    labels: list[str]
    cat_ids: list[int]

    def image_path(self, image: dict[str, Any]) -> Path:
        return self.images_dir / image["file_name"]

    def annotations_of(self, image_id: int) -> list[dict[str, Any]]:
        return [a for a in self.gt["annotations"] if a["image_id"] == image_id and not a.get("iscrowd", 0)]


def find_annotations(data: str | Path, split: str) -> Path:
    """The COCO JSON of ``data``: the file itself, or ``<split>/annotations.json`` or ``annotations.json`` in it."""
    data = Path(data)
    if data.is_file():
        return data
    for candidate in (data / split / "annotations.json", data / "annotations.json"):
        if candidate.is_file():
            return candidate
    raise CnnkitError(f"{data}: no COCO annotations found (looked for {split}/annotations.json and annotations.json)")


def read_coco(data: str | Path, split: str = "val") -> CocoSplit:
    """The ``split`` of a COCO dataset: its images, categories and annotations, checked on reading."""
    path = find_annotations(data, split)
    try:
        gt = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: not a readable COCO JSON ({exc})") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in gt]
    if missing:
        raise CnnkitError(f"{path}: not COCO instances JSON (no {', '.join(missing)})")
    images_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    return CocoSplit(path, images_dir, gt, [c["name"] for c in cats], [c["id"] for c in cats])
