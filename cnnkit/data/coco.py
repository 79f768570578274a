"""Read a COCO-format instance dataset (as ``cnnkit data shapes OUT --layout coco`` writes it).

Accepted layouts for ``DATA``: ``DATA/<split>/annotations.json`` with ``DATA/<split>/images``;
``DATA/annotations.json`` with ``DATA/images``; or the annotations JSON file itself, its images
in an ``images`` folder beside it, in COCO's own layout (``annotations/instances_val2017.json`` and
``val2017/``), or beside the file.
"""

from __future__ import annotations

import functools
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
        """An image's annotations, crowds left out (an index built once: 400k annotations scanned per sample
        cost 40 ms each)."""
        return self._by_image.get(image_id, [])

    @functools.cached_property
    def _by_image(self) -> dict[Any, list[dict[str, Any]]]:
        index: dict[Any, list[dict[str, Any]]] = {}
        for a in self.gt["annotations"]:
            if not a.get("iscrowd", 0):
                index.setdefault(a["image_id"], []).append(a)
        return index


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
    except (OSError, ValueError, RecursionError) as exc:
        raise CnnkitError(f"{path}: not a readable COCO JSON ({str(exc)[:200] or 'nested too deep'})") from None
    if not isinstance(gt, dict):
        raise CnnkitError(f"{path}: not COCO instances JSON (an object with images, annotations and categories)")
    missing = [k for k in ("images", "annotations", "categories") if k not in gt]
    if missing:
        raise CnnkitError(f"{path}: not COCO instances JSON (no {', '.join(missing)})")
    check_coco(path, gt)
    if not gt["images"]:
        raise CnnkitError(f"{path}: no images to score or train on")
    images_dir = _images_dir(path)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    return CocoSplit(path, images_dir, gt, [c["name"] for c in cats], [c["id"] for c in cats])


def _images_dir(annotations: Path) -> Path:
    """Where a COCO file's images are: ``images/`` beside it, COCO's own layout (``annotations/instances_val2017.json``
    with ``val2017/`` beside ``annotations/``), else the file's folder."""
    if (annotations.parent / "images").is_dir():
        return annotations.parent / "images"
    stem = annotations.stem
    split = stem.rsplit("_", 1)[-1]  # instances_val2017, person_keypoints_val2017 → val2017
    coco = annotations.parent.parent / split
    if annotations.parent.name == "annotations" and split and coco.is_dir():
        return coco
    return annotations.parent


def _rle_runs(counts: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or ``None`` where it is
    not one: pycocotools decodes any text, and a string that is none gives a mask of garbage."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts) or not 48 <= ord(counts[p]) < 112:
                return None
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


def check_coco(path: Path, gt: dict[str, Any]) -> None:
    """Refuse, naming the file and the entry, what pycocotools would crash on (or run out of memory on) or
    silently miscount: images and categories without ids of their own, of one type, a ``file_name`` and a
    ``name``; annotations without an id of their own, a known image and category, a ``bbox`` of four finite
    numbers (sizes not negative), or a ``segmentation`` of polygons (6+ finite coordinates each, near their
    image, whose width and height they need) or an RLE of their image's size."""
    import math

    def bad(where: str, why: str) -> CnnkitError:
        return CnnkitError(f"{path}: {where}: {why}"[:400])

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not all(isinstance(gt[k], list) for k in ("images", "annotations", "categories")):
        raise bad("top level", "images, annotations and categories must be lists")
    for kind, text in (("images", "file_name"), ("categories", "name")):
        seen: set[Any] = set()
        for i, entry in enumerate(gt[kind]):
            if not isinstance(entry, dict) or not isinstance(entry.get(text), str):
                raise bad(f"{kind}[{i}]", f"needs an id and a {text} (text)")
            ident = entry.get("id")
            if not isinstance(ident, (int, str)) or isinstance(ident, bool) or ident in seen:
                raise bad(f"{kind}[{i}]", "needs an id (a number or text) of its own, not " + repr(ident)[:40])
            if seen and type(ident) is not type(next(iter(seen))):
                raise bad(f"{kind}[{i}]", "ids must be all numbers or all text")
            seen.add(ident)
            for k in ("width", "height") if kind == "images" else ():
                if k in entry and not (isinstance(entry[k], int) and not isinstance(entry[k], bool) and entry[k] > 0):
                    raise bad(f"{kind}[{i}] (id {ident!r})", f"{k} must be a positive whole number, not {entry[k]!r}")
    names: dict[str, Any] = {}
    for i, c in enumerate(gt["categories"]):
        if c["name"] in names:  # two categories of one name: a model's label would score against one of them
            raise bad(
                f"categories[{i}] (id {c['id']!r})", f"its name {c['name']!r} is category {names[c['name']]!r}'s too"
            )
        names[c["name"]] = c["id"]
    images, cats = {im["id"]: im for im in gt["images"]}, {c["id"] for c in gt["categories"]}
    ids: set[Any] = set()
    for i, a in enumerate(gt["annotations"]):
        where = f"annotations[{i}] (id {a.get('id')!r})" if isinstance(a, dict) else f"annotations[{i}]"
        if not isinstance(a, dict):
            raise bad(where, "not an object")
        if not isinstance(a.get("id"), (int, str)) or a["id"] in ids:
            raise bad(where, "needs an id of its own" if "id" not in a else "the same id as an earlier annotation")
        ids.add(a["id"])
        if not isinstance(a.get("image_id"), (int, str)) or a["image_id"] not in images:
            raise bad(where, f"image_id {a.get('image_id')!r} is not one of the images")
        if not isinstance(a.get("category_id"), (int, str)) or a["category_id"] not in cats:
            raise bad(where, f"category_id {a.get('category_id')!r} is not one of the categories")
        box = a.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(number(v) for v in box) or box[2] < 0 or box[3] < 0:
            raise bad(where, f"bbox must be [x, y, width, height], sizes not negative, not {box!r}")
        image = images[a["image_id"]]
        width, height = image.get("width"), image.get("height")
        seg = a.get("segmentation")
        if isinstance(seg, list):
            if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
                raise bad(where, "segmentation must be polygons ([[x1, y1, x2, y2, x3, y3, …], …]) or an RLE")
            if width is None or height is None:
                raise bad(where, f"its image (id {a['image_id']!r}) needs a width and a height, to draw its mask")
            side = max(width, height)  # far-off or non-finite points make pycocotools allocate without bound
            if not all(number(v) and -side <= v <= 2 * side for p in seg for v in p):
                raise bad(where, f"a polygon point is not a number near the {width}x{height} image")
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            size, counts = seg["size"], seg["counts"]
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
                raise bad(where, f"an RLE size must be [height, width], not {size!r}")
            if width is not None and height is not None and size != [height, width]:
                raise bad(where, f"its RLE is {size[1]}x{size[0]}, its image {width}x{height}")
            if width is None and height is None:  # pycocotools needs the image's size; its RLE gives it
                image["height"], image["width"] = size
            runs = _rle_runs(counts) if isinstance(counts, str) else counts
            if not (
                isinstance(runs, list)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in runs)
                and sum(runs) == size[0] * size[1]
            ):
                raise bad(where, "RLE counts must be a COCO string or run lengths that cover the image")
        else:
            raise bad(where, "segmentation must be polygons ([[x1, y1, x2, y2, x3, y3, …], …]) or an RLE")
