"""``cnnkit instance val``: box and mask AP (pycocotools) of a model on a COCO-format split."""

from __future__ import annotations

import logging
from typing import Any

from cnnkit.errors import CnnkitError, printable
from cnnkit.eval.report import ReportTable, confusion_table, runtime_facts, runtime_note, table
from cnnkit.tasks.instance.predict import InstanceSegmenter

log = logging.getLogger("cnnkit")


def validate(
    data: str,
    *,
    split: str = "val",
    model: str | None = None,
    weights: str | None = None,
    conf: float = 0.001,
    mask_threshold: float = 0.5,
    max_det: int = 100,
    batch_size: int = 4,
    workers: int = 2,
    device: str | None = None,
    threads: int | None = None,
    on_record: Any = None,
) -> dict[str, Any]:
    """bbox and segm AP, AP50, AP75 (pycocotools) of a model on a COCO-format split.

    Model classes are matched to the dataset's categories by name, so a COCO model on
    COCO data and a finetuned model on its own data both score correctly; detections
    of classes the dataset lacks are dropped.
    ``on_record(record, truth)`` sees each record with its labelled boxes (``[{"label", "box"}]``).
    """
    from cnnkit.data.coco import read_coco
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.report.evidence import box_confusion

    ds = read_coco(data, split)
    predictor = InstanceSegmenter.load(
        model, weights, device=device, threads=threads, conf=conf, mask_threshold=mask_threshold, max_det=max_det
    )
    by_name = dict(zip(ds.labels, ds.cat_ids))
    category_ids = {i: by_name[n] for i, n in enumerate(predictor.labels) if n in by_name}
    if not category_ids:
        raise CnnkitError(
            f"{data}: none of the model's classes ({', '.join(predictor.labels[:5])} …) "
            f"are dataset categories ({', '.join(ds.labels[:5])} …)"
        )
    paths: dict[str, list[Any]] = {}  # a file two image entries name is scored under both, as pycocotools would
    for im in ds.gt["images"]:
        paths.setdefault(str(ds.image_path(im)), []).append(im["id"])
    names = {c["id"]: c["name"] for c in ds.gt.get("categories", [])}
    truth: dict[Any, list[dict[str, Any]]] = {}
    for a in ds.gt.get("annotations", []):
        x, y, w, h = a["bbox"]
        truth.setdefault(a["image_id"], []).append(
            {"label": names.get(a["category_id"], str(a["category_id"])), "box": [x, y, x + w, y + h]}
        )
    coco = CocoResults(image_ids={p: ids[0] for p, ids in paths.items()}, category_ids=category_ids)
    failed = []
    pairs = []
    sizes = {str(ds.image_path(im)): (im.get("width"), im.get("height")) for im in ds.gt["images"]}
    read_sizes: dict[Any, tuple[Any, Any]] = {}  # image id → the size read, for entries that give none
    for record in predictor.stream(list(paths), batch_size=batch_size, workers=workers):
        said = sizes[record.path]
        if record.error is None and None not in said and said != (record.width, record.height):
            # its boxes and masks are in other pixels than the ones the model saw: scored, it would mislead
            record.error = (
                f"the image is {record.width}x{record.height}, {ds.annotations.name} says {said[0]}x{said[1]}"
            )
            record.predictions = []
        if record.error is not None:
            failed.append({"path": record.path, "error": record.error})
            log.warning("failed %s: %s", printable(record.path), record.error)
        record.predictions = [p for p in record.predictions if p["class_id"] in category_ids]
        ids = paths[record.path]
        for image_id in ids:
            coco.add(record, image_id)
            if record.error is None:
                pairs.append((record.predictions, truth.get(image_id, [])))
                read_sizes[image_id] = (record.width, record.height)
        if on_record is not None:
            on_record(record, [t for i in ids for t in truth.get(i, [])] if record.error is None else [])
    # as every val: an image that could not be read is left out, its objects with it (not counted as missed)
    unread = {i for f in failed for i in paths[f["path"]]}
    summary: dict[str, Any] = {
        "data": str(ds.annotations),
        "model": predictor.name,
        **runtime_facts(predictor),
        "images": len(ds.gt["images"]) - len(unread),
        "failed": failed,
        "confusion": box_confusion(pairs, ds.labels),
    }
    scored = dict(
        ds.gt,
        images=[  # pycocotools needs each image's size to draw masks: the size read, where the entry gives none
            im
            if ("width" in im and "height" in im) or im["id"] not in read_sizes
            else dict(im, width=read_sizes[im["id"]][0], height=read_sizes[im["id"]][1])
            for im in ds.gt["images"]
            if im["id"] not in unread
        ],
        annotations=[a for a in ds.gt.get("annotations", []) if a["image_id"] not in unread],
    )
    for iou_type in ("bbox", "segm"):
        res = evaluate(scored, coco.results(), iou_type, max_det=max_det)
        summary[iou_type] = {"AP": res["AP"], "AP50": res["AP50"], "AP75": res["AP75"], "per_class": res["per_class"]}
    return summary


def report_tables(summary: dict[str, Any]) -> list[ReportTable]:
    """bbox and segm AP, AP50 and AP75 of :func:`validate`'s metrics, one row each."""
    rows = [(kind, *(summary[kind][k] for k in ("AP", "AP50", "AP75"))) for kind in ("bbox", "segm")]
    notes = [runtime_note(summary)] + ([f"{len(summary['failed'])} image(s) failed"] if summary["failed"] else [])
    return [
        table(
            f"{summary['model']} on {summary['data']} ({summary['images']} images)",
            ("", "AP", "AP50", "AP75"),
            rows,
            notes,
        ),
        *([confusion_table(summary["confusion"])] if "confusion" in summary else []),
    ]
