"""Semantic segmentation metrics from one confusion matrix: mIoU, per-class IoU, pixel accuracy.

The matrix is accumulated over a whole dataset (integer counts, so the order of
images does not matter), and every figure is read off it at the end.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.errors import printable
from cnnkit.eval.report import ReportTable, confusion_table, figure, runtime_facts, runtime_note, table

log = logging.getLogger("cnnkit")

if TYPE_CHECKING:
    import torch


def class_map(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The class index per pixel of a score tensor: ``argmax`` over ``dim``.

    ``max(dim).indices`` picks the same class (the first on ties) but reduces a
    class-first contiguous tensor about 9× faster on CPU than ``argmax`` does (torch 2.14:
    1.3 ms against 11.8 ms for 6×256×256), and this runs once per image.
    """
    return scores.max(dim).indices


class ConfusionMatrix:
    """``counts[t, p]`` = pixels of true class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add integer label maps (NumPy arrays or tensors of any matching shape)."""
        pred = _numpy(pred).astype(np.int64).ravel()
        target = _numpy(target).astype(np.int64).ravel()
        keep = (target >= 0) & (target < self.num_classes)
        idx = target[keep] * self.num_classes + pred[keep]
        self.counts += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def scores(self, labels: list[str] | None = None) -> dict[str, Any]:
        """``miou`` averages the classes that occur in the truth or the predictions."""
        tp = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - tp
        present = union > 0
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
        names = labels or [str(i) for i in range(self.num_classes)]
        total = self.counts.sum()
        return {
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "per_class_iou": {n: (float(v) if p else None) for n, v, p in zip(names, iou, present)},
            "pixels": int(total),
        }


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def evaluate_folder(
    predictor: Any, data: str, *, split: str = "val", batch_size: int = 8, workers: int = 2, on_record: Any = None
) -> dict[str, Any]:
    """Run ``predictor`` (a :class:`~cnnkit.tasks.segment.predict.Segmenter`) over image/mask pairs.

    ``on_record(record, truth)`` sees each record with every class of its true or predicted mask, that
    class's IoU in this image and its true pixels (``[{"label", "iou", "pixels"}]``): a report's worst images.
    """
    from cnnkit.data.masks import IGNORE, check_mask_values, declared_names, find_pairs, read_mask
    from cnnkit.errors import CnnkitError

    failed: list[dict[str, str]] = []  # images left out of the scores, named: no mask, or unreadable
    pairs = find_pairs(data, split, missing=failed)
    found = len(pairs) + len(failed)  # every image, a mask or not
    for f in failed:
        log.warning("failed %s: %s", printable(f["path"]), f["error"])
    masks = {str(image): mask for image, mask in pairs}
    cm = ConfusionMatrix(len(predictor.labels))
    names = declared_names(data)
    values = len(names) if names else len(predictor.labels)  # mask values that are classes
    lookup = None  # dataset mask value → the model's class index, matched by name as detect and instance do
    if names and names != list(predictor.labels):
        index = {name: i for i, name in enumerate(predictor.labels)}
        lookup = np.full(256, IGNORE, np.uint8)
        lookup[: len(names)] = [index.get(n, IGNORE) for n in names]
        lookup[0] = index.get(names[0], 0)  # value 0 is the background, whatever each calls it
        unknown = [n for n in names[1:] if n not in index]
        if unknown and len(unknown) == len(names) - 1:
            raise CnnkitError(f"{data}: none of its classes ({', '.join(names[:5])} …) are the model's")
        if unknown:
            log.warning("%s: classes the model lacks, left out of the scores: %s", data, ", ".join(unknown))
    classes_seen = void_seen = False  # masks of only 0 and IGNORE (a 0/255 binary mask) score no object
    for record, pred in predictor.masks([str(i) for i, _ in pairs], batch_size=batch_size, workers=workers):
        try:
            if pred is None:
                raise CnnkitError(str(record.error))
            target = read_mask(masks[record.path])
            if target.shape != pred.shape:
                raise CnnkitError(f"{masks[record.path]}: mask size {target.shape[::-1]} differs from the image's")
            check_mask_values(masks[record.path], target, values)
            void = target == IGNORE
            void_seen = void_seen or bool(void.any())
            classes_seen = classes_seen or bool((target[~void] > 0).any())
            if lookup is not None:
                target = lookup[target]
        except CnnkitError as exc:  # the image is left out of the scores and named; the next one follows
            failed.append({"path": record.path, "error": str(exc)})
            log.warning("failed %s: %s", printable(record.path), exc)
            continue
        cm.update(pred, target)
        if on_record is not None:
            one = ConfusionMatrix(cm.num_classes)
            one.update(pred, target)
            ious = one.scores(predictor.labels)["per_class_iou"]
            true_pixels = one.counts.sum(1)
            on_record(
                record,
                [
                    {"label": name, "iou": v, "pixels": int(n)}
                    for (name, v), n in zip(ious.items(), true_pixels, strict=True)
                    if v is not None
                ],
            )
    if void_seen and not classes_seen:
        log.warning(
            "%s: the masks hold only the background (0) and %d, which marks pixels to ignore (VOC's void): no "
            "object pixel is scored; give object pixels the values 1, 2, …",
            printable(str(data)),
            IGNORE,
        )
    return {
        "model": predictor.name,
        **runtime_facts(predictor),
        "data": str(data),
        "images": found - len(failed),
        "failed": failed,
        **cm.scores(predictor.labels),
        "confusion": {"labels": list(predictor.labels), "matrix": cm.counts.tolist(), "unit": "pixels"},
    }


def validate(
    data: str,
    *,
    split: str = "val",
    model: str | None = None,
    weights: str | None = None,
    backend: str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    on_record: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy of a segmenter on image/mask pairs (``split``: the folder
    used when ``data`` is a root). ``options`` are the segmenter's (``arch``, ``imgsz``, ``tile``, ``device`` …)."""
    from cnnkit import api

    predictor = api.load("segment", model=model, weights=weights, backend=backend, **options)
    return evaluate_folder(predictor, data, split=split, batch_size=batch_size, workers=workers, on_record=on_record)


def report_tables(scores: dict[str, Any]) -> list[ReportTable]:
    """The per-class IoU table and the summary line of :func:`validate`'s metrics."""
    return [
        table(
            f"{scores['model']} on {scores['data']} ({scores['images']} images)",
            ("class", "IoU"),
            [(name, figure(iou)) for name, iou in scores["per_class_iou"].items()],
            [f"mIoU {scores['miou']:.4f}   pixel accuracy {scores['pixel_accuracy']:.4f}", runtime_note(scores)],
        ),
        *([confusion_table(scores["confusion"], "pixel confusion")] if "confusion" in scores else []),
    ]
