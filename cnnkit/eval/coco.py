"""COCO results and COCO-style AP from records, through pycocotools.

Shared by ``detect`` and ``instance``: :class:`CocoResults` turns records into a
COCO results list (``--format coco``), :func:`evaluate` scores it against a ground
truth dict with ``COCOeval`` and returns AP, AP50, AP75 (overall and per class).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from cnnkit.records import Record

log = logging.getLogger("cnnkit")


class CocoResults:
    """Collects ``bbox`` (and ``segm`` when predictions carry an RLE ``mask``) results.

    ``image_ids`` maps a record's path (or its file name) to the ground truth's image
    id; any other image, or video frame, gets the next id in arrival order, failed records included, so
    with no ground truth an id is the record's 1-based place in the output. A result whose id cnnkit gave
    also names its ``file_name`` (and ``frame``), as the ground truth's images table would: pycocotools
    ignores the extra keys, a reader maps ids back to files.
    ``category_ids`` maps class_id → COCO category id (default ``class_id + 1``).
    """

    def __init__(
        self, image_ids: Mapping[str, int | str] | None = None, category_ids: dict[int, int] | None = None
    ) -> None:
        self.image_ids: dict[str, int | str] = dict(image_ids or {})
        self.category_ids = category_ids
        self.items: list[dict[str, Any]] = []
        self._given = frozenset(self.image_ids.values())  # the ground truth's ids
        self._next = max((i for i in self.image_ids.values() if isinstance(i, int)), default=0) + 1  # ids may be text

    def image_id(self, path: str, frame: int | None = None) -> int | str:
        key = path if frame is None else f"{path}#{frame}"
        if key in self.image_ids:
            return self.image_ids[key]
        # a ground truth may name its images by file name; an id given here is for that path only (an earlier
        # `scene.png` is not a later `sub/scene.png`)
        name = os.path.basename(path) if frame is None else None
        if name in self.image_ids and self.image_ids[name] in self._given:
            return self.image_ids[name]
        new = self.image_ids[key] = self._next
        self._next += 1
        return new

    def add(self, record: Record, image_id: int | str | None = None) -> None:
        """``record``'s results, under ``image_id`` when given (a ground truth naming one file twice)."""
        image_id = self.image_id(record.path, record.frame) if image_id is None else image_id
        if record.error is not None:
            return
        where: dict[str, Any] = {}
        if image_id not in self._given:
            where["file_name"] = record.path
            if record.frame is not None:
                where["frame"] = record.frame
        for p in record.predictions:
            cat = self.category_ids[p["class_id"]] if self.category_ids else p["class_id"] + 1
            x1, y1, x2, y2 = p["box"]  # w, h rounded: 2-decimal boxes give 2-decimal sizes, not 74.39000000000001
            item = {
                "image_id": image_id,
                "category_id": cat,
                "bbox": [x1, y1, round(x2 - x1, 6), round(y2 - y1, 6)],
                "score": p["score"],
            }
            if isinstance(p.get("mask"), dict):
                item["segmentation"] = p["mask"]
            self.items.append({**item, **where})

    def results(self) -> list[dict[str, Any]]:
        return self.items


def evaluate(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "bbox", max_det: int = 100
) -> dict[str, Any]:
    """COCO AP of ``results`` against the ground-truth dict ``gt`` (``iou_type``: bbox or segm), counting up to
    ``max_det`` detections an image (pycocotools' 100 unless the predictor kept more: ultralytics' val counts
    its 300, so a crowded image's objects past the 100th were missed)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        # ids renumbered: pycocotools keeps annotation ids in float arrays, and COCO allows text ids
        coco_gt.dataset = {**gt, "annotations": [dict(a, id=i) for i, a in enumerate(gt["annotations"], 1)]}
        for a in coco_gt.dataset["annotations"]:
            a.setdefault("iscrowd", 0)
            a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        coco_gt.createIndex()
        if iou_type == "bbox":
            results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.maxDets = [1, 10, max(int(max_det), 100)]  # AP is read at the last (ap() below)
        if not results:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "per_class": {}}
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    per_class = {}
    precision = ev.eval["precision"]  # [T, R, K, A, M]

    def ap(iou: float | None = None) -> float:
        """As summarize() says it, at the last maxDets (its AP over all IoUs is read at 100 whatever is set)."""
        p = precision[:, :, :, 0, -1] if iou is None else precision[np.isclose(ev.params.iouThrs, iou), :, :, 0, -1]
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else 0.0

    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        p50 = precision[0, :, k, 0, -1]
        p50 = p50[p50 > -1]
        per_class[names.get(cat_id, str(cat_id))] = {  # None without ground truth, where pycocotools says -1
            "AP": float(valid.mean()) if valid.size else None,
            "AP50": float(p50.mean()) if p50.size else None,
        }
    pr = precision_recall(ev)
    for cat_id, (p, r) in pr["per_class"].items():
        per_class[names.get(cat_id, str(cat_id))].update(precision=p, recall=r)
    if not gt["annotations"]:  # pycocotools says -1 (no data); 0 as with no results, and as ultralytics says
        log.warning("no ground-truth objects to score against: AP is 0")
    return {
        "AP": ap(),
        "AP50": ap(0.5),
        "AP75": ap(0.75),
        "per_class": per_class,
        "precision": pr["precision"],
        "recall": pr["recall"],
        "pr_conf": pr["conf"],
        "_stats": np.asarray(stats).tolist(),
    }


def precision_recall(ev: Any, iou: float = 0.5) -> dict[str, Any]:
    """Precision and recall from COCOeval's matches at ``iou``, at one confidence for all classes.

    The confidence is the one that maximises the mean F1 over classes with ground truth, computed as
    ultralytics' ``ap_per_class`` does (the operating point it reports): per class, precision and recall
    interpolated over a 1,000-point confidence grid (precision 1 above the top score), the mean F1
    smoothed by a box filter a tenth of the grid wide.
    """
    params = ev.params
    t = int(np.argmin(np.abs(params.iouThrs - iou)))
    n_area, n_img, max_det = len(params.areaRng), len(params.imgIds), params.maxDets[-1]
    grid = np.linspace(0, 1, 1000)
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, cat_id in enumerate(params.catIds):
        found = [e for e in ev.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img] if e is not None]
        n_gt = sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in found)
        if n_gt == 0:
            continue
        scores = np.concatenate([e["dtScores"][:max_det] for e in found]) if found else np.zeros(0)
        matched = np.concatenate([e["dtMatches"][t, :max_det] for e in found]) if found else np.zeros(0)
        ignored = np.concatenate([e["dtIgnore"][t, :max_det] for e in found]) if found else np.zeros(0)
        keep = ~ignored.astype(bool)
        scores, tp = np.asarray(scores, float)[keep], matched[keep] > 0
        if not len(scores):
            curves[cat_id] = (np.zeros_like(grid), np.zeros_like(grid))
            continue
        order = np.argsort(-scores, kind="mergesort")
        scores, tpc = scores[order], np.cumsum(tp[order])
        precision = tpc / np.arange(1, len(tpc) + 1)
        curves[cat_id] = (
            np.interp(-grid, -scores, precision, left=1),
            np.interp(-grid, -scores, tpc / n_gt, left=0),
        )
    if not curves:
        return {"precision": 0.0, "recall": 0.0, "conf": None, "per_class": {}}
    p_all = np.stack([c[0] for c in curves.values()])
    r_all = np.stack([c[1] for c in curves.values()])
    f1 = (2 * p_all * r_all / np.maximum(p_all + r_all, 1e-16)).mean(0)
    width = round(len(f1) * 0.1 * 2) // 2 + 1  # ultralytics' smooth(f1, 0.1): an odd box filter, ends repeated
    padded = np.concatenate([np.full(width // 2, f1[0]), f1, np.full(width // 2, f1[-1])])
    i = int(np.argmax(np.convolve(padded, np.ones(width) / width, mode="valid")))
    per_class = {cat_id: (float(p[i]), float(r[i])) for cat_id, (p, r) in curves.items()}
    return {
        "precision": float(p_all[:, i].mean()),
        "recall": float(r_all[:, i].mean()),
        "conf": round(float(grid[i]), 4),
        "per_class": per_class,
    }
