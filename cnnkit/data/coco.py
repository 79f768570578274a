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

from cnnkit.errors import CnnkitError, UsageError


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
    if not data.exists():  # a mistyped path, as detect and classify say it
        raise UsageError(f"{data}: no such file or folder")
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
    check_coco(path, gt)
    images_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    return CocoSplit(path, images_dir, gt, [c["name"] for c in cats], [c["id"] for c in cats])


def check_coco(path: Path, gt: dict[str, Any]) -> None:
    """Refuse, naming the file and the entry, what pycocotools would crash on or silently miscount: images
    and categories without ids, and annotations without an id of their own, a known image and category, a
    ``bbox`` of four finite numbers (sizes not negative), or a ``segmentation`` of polygons (6+ coordinates
    each) or an RLE; polygons need their image's width and height."""
    import math

    def bad(where: str, why: str) -> CnnkitError:
        return CnnkitError(f"{path}: {where}: {why}")

    if not all(isinstance(gt[k], list) for k in ("images", "annotations", "categories")):
        raise bad("top level", "images, annotations and categories must be lists")
    for kind in ("images", "categories"):
        for i, entry in enumerate(gt[kind]):
            if (
                not isinstance(entry, dict)
                or "id" not in entry
                or ("name" if kind == "categories" else "file_name") not in entry
            ):
                raise bad(f"{kind}[{i}]", "needs an id and a " + ("name" if kind == "categories" else "file_name"))
    images, cats = {im["id"]: im for im in gt["images"]}, {c["id"] for c in gt["categories"]}
    ids: set[Any] = set()
    for i, a in enumerate(gt["annotations"]):
        where = f"annotations[{i}] (id {a.get('id')})" if isinstance(a, dict) else f"annotations[{i}]"
        if not isinstance(a, dict):
            raise bad(where, "not an object")
        if "id" not in a or a["id"] in ids:
            raise bad(where, "needs an id of its own" if "id" not in a else "the same id as an earlier annotation")
        ids.add(a["id"])
        if a.get("image_id") not in images:
            raise bad(where, f"image_id {a.get('image_id')!r} is not one of the images")
        if a.get("category_id") not in cats:
            raise bad(where, f"category_id {a.get('category_id')!r} is not one of the categories")
        box = a.get("bbox")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
            or box[2] < 0
            or box[3] < 0
        ):
            raise bad(where, f"bbox must be [x, y, width, height], sizes not negative, not {box!r}"[:200])
        seg = a.get("segmentation")
        polygons = isinstance(seg, list) and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p)
            for p in seg
        )
        rle = isinstance(seg, dict) and "counts" in seg and "size" in seg
        if not polygons and not rle:
            raise bad(where, "segmentation must be polygons ([[x1, y1, x2, y2, x3, y3, …], …]) or an RLE")
        image = images[a["image_id"]]
        drawn = polygons or (isinstance(seg, dict) and not isinstance(seg["counts"], str))  # from the image's size
        if drawn and not all(isinstance(image.get(k), int) and image[k] > 0 for k in ("width", "height")):
            raise bad(where, f"its image (id {a['image_id']!r}) needs a width and a height, to draw its mask")
