"""``cnnkit detect val``: score a detector on a YOLO-format dataset, the COCO way, from cnnkit's records.

The predictions are the records ``cnnkit detect`` writes (conf 0.001 by default, as
validators use); ground truth comes from the YOLO label files; :func:`cnnkit.eval.coco.evaluate`
(pycocotools) gives mAP50 / mAP50-95 and precision / recall. For YOLO weights,
ultralytics' own ``val`` runs on the same weights and data and is reported beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnkit.data import label_cache, yolo_yaml
from cnnkit.data.yolo_yaml import Label, label_path, read_labels
from cnnkit.errors import CnnkitError, printable, reason_of
from cnnkit.eval.report import ReportTable, confusion_table, figure, runtime_facts, runtime_note
from cnnkit.records import Record

log = logging.getLogger("cnnkit")


def ground_truth(
    records: list[Record], names: list[str], labels: dict[str, list[Label]] | None = None
) -> dict[str, Any]:
    """A COCO ground-truth dict from the label files of the images in ``records`` (``labels``: already read,
    by image path)."""
    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for image_id, rec in enumerate(records, start=1):
        width, height = rec.width or 0, rec.height or 0  # a failed image has no size and no boxes to scale
        gt["images"].append({"id": image_id, "file_name": rec.path, "width": rec.width, "height": rec.height})
        rows = labels[rec.path] if labels is not None else read_labels(label_path(Path(rec.path)), len(names))
        for cls, cx, cy, w, h in rows:
            bw, bh = w * width, h * height
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [cx * width - bw / 2, cy * height - bh / 2, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    return gt


def category_map(labels: list[str], names: list[str]) -> dict[int, int]:
    """Model class id → dataset category id: by name when the names overlap, else by position."""
    if set(labels) & set(names):
        return {i: names.index(lab) + 1 for i, lab in enumerate(labels) if lab in names}
    log.warning("model labels do not match the dataset names; matching classes by id")
    return {i: i + 1 for i in range(min(len(labels), len(names)))}


PER_CLASS = {"precision": "precision", "recall": "recall", "mAP50": "AP50", "mAP50-95": "AP"}  # ours: evaluate's


def validate(
    data: str | os.PathLike,
    *,
    model: str | None = None,
    weights: str | None = None,
    split: str = "val",
    conf: float = 0.001,
    iou: float | None = None,
    imgsz: int | None = None,
    max_det: int = 300,
    batch_size: int = 16,
    workers: int = 2,
    device: str | None = None,
    threads: int | None = None,
    compare: bool = True,
    backend: str | None = None,
    on_record: Callable[[Record, list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Metrics of a detector on ``split`` of the YOLO dataset yaml ``data`` (see module doc).

    ``on_record(record, truth)`` sees each record with its labelled boxes (``[{"label", "box"}]``,
    dataset names, the record's pixels), as a report needs them.
    """
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.report.evidence import box_confusion
    from cnnkit.tasks.detect.predict import Detector

    ds = yolo_yaml.read(data, require=(split,))
    images = yolo_yaml.split_images(ds, split)
    detector = Detector.load(
        model,
        weights,
        conf=conf,
        iou=iou,
        imgsz=imgsz,
        max_det=max_det,
        device=device,
        threads=threads,
        backend=backend,
    )
    detector.options.multi_label = True
    streamed = list(detector.stream([str(p) for p in images], batch_size=batch_size, workers=workers))
    labels: dict[str, list[Label]] = {}
    for r in streamed:
        if r.ok:
            try:
                labels[r.path] = read_labels(label_path(Path(r.path)), len(ds.names))
            except CnnkitError as exc:  # the image is left out, as ultralytics leaves out a corrupt label
                r.error = str(exc)
        if not r.ok:
            log.warning("failed %s: %s", printable(r.path), r.error)
    # an image the split names twice (a list line repeated, two folders that overlap) is read once and
    # scored twice, as ultralytics scores it
    times = Counter(os.path.realpath(p) for p in images)
    records = [r for r in streamed for _ in range(max(times[os.path.realpath(r.path)], 1))]
    good = [r for r in records if r.ok]
    gt = ground_truth(good, ds.names, labels)
    truth: dict[int, list[dict[str, Any]]] = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        truth.setdefault(a["image_id"], []).append(
            {"label": ds.names[a["category_id"] - 1], "box": [x, y, x + w, y + h]}
        )
    index: dict[str, int] = {}
    for i, r in enumerate(good, start=1):
        index.setdefault(r.path, i)
    cats = category_map(detector.labels, ds.names)

    def named(r: Record) -> list[dict[str, Any]]:
        """``r``'s predictions of the dataset's classes, labelled with the dataset's names, as its truth is."""
        return [{**p, "label": ds.names[cats[p["class_id"]] - 1]} for p in r.predictions if p["class_id"] in cats]

    if on_record is not None:
        for r in streamed:
            on_record(dataclasses.replace(r, predictions=named(r)), truth.get(index[r.path], []) if r.ok else [])
    coco = CocoResults(index, cats)
    pairs = []
    for i, r in enumerate(good, start=1):
        r.predictions = [p for p in r.predictions if p["class_id"] in cats]
        coco.add(r, i)
        pairs.append((named(r), truth.get(i, [])))
    scores = evaluate(gt, coco.results(), "bbox", max_det=max_det)
    counts = {c["id"]: 0 for c in gt["categories"]}
    for a in gt["annotations"]:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    per_class = {}
    for cat in gt["categories"]:
        s = scores["per_class"].get(cat["name"], {})
        n = counts.get(cat["id"], 0)
        per_class[cat["name"]] = {  # a class without ground truth has no figures (pycocotools: -1), not 0
            "instances": n,
            **{k: s.get(key, 0.0) if n else None for k, key in PER_CLASS.items()},
        }
    result: dict[str, Any] = {
        "data": str(data),
        "split": split,
        "model": detector.name,
        **{("dtype" if k == "precision" else k): v for k, v in runtime_facts(detector).items()},
        "images": len(good),
        "failed": len(records) - len(good),  # as images: an entry named twice counts twice
        "instances": len(gt["annotations"]),
        "mAP50": scores["AP50"],
        "mAP50-95": scores["AP"],
        "precision": scores.get("precision", 0.0),
        "recall": scores.get("recall", 0.0),
        "per_class": per_class,
        "conf": conf,
        "iou": detector.options.iou,
        "imgsz": detector.backend.imgsz,
        "confusion": box_confusion(pairs, ds.names),
    }
    checkpoint = getattr(detector.backend, "checkpoint", None)
    if compare and checkpoint and any(k + 1 != v for k, v in cats.items()):
        # ultralytics scores the model's class i against the dataset's class i, whatever their names
        log.warning(
            "ultralytics' own val is left out: it pairs classes by id, and the model's class names are in "
            "another order than the dataset's"
        )
    elif compare and checkpoint:
        ul = ultralytics_val(
            checkpoint,
            ds,
            split=split,
            imgsz=detector.backend.imgsz,
            batch=batch_size,
            conf=conf,
            iou=detector.options.iou,
            max_det=max_det,
            device=detector.backend.runtime.device,
        )
        if ul is not None:  # None: ultralytics refused the data (said)
            result["ultralytics"] = ul
    return result


def ultralytics_val(
    checkpoint: str,
    data: yolo_yaml.DatasetYaml,
    *,
    split: str,
    imgsz: int,
    batch: int,
    conf: float,
    iou: float,
    max_det: int,
    device: Any,
) -> dict[str, Any] | None:
    """ultralytics' own ``val`` on the same weights and data, quietly, in a temp folder (``None`` when it refuses
    the data).

    ultralytics reads cnnkit's sanitised copy of the dataset yaml (no ``download``), never the original,
    and its label caches through :mod:`cnnkit.data.label_cache`.
    """
    from cnnkit import ultralytics_adapter

    yolo = ultralytics_adapter.yolo(checkpoint)
    label_cache.install()
    with ultralytics_adapter.quiet(), tempfile.TemporaryDirectory(prefix="cnnkit-val-") as tmp:
        clean = yolo_yaml.write_sanitised(data, Path(tmp) / "data.yaml")
        try:
            m = yolo.val(
                data=str(clean),
                split=split,
                imgsz=imgsz,
                batch=batch,
                conf=conf,
                iou=iou,
                max_det=max_det,
                device=ultralytics_adapter.device_arg(device),
                workers=0,
                plots=False,
                save_json=False,
                verbose=False,
                project=tmp,
                name="val",
                exist_ok=True,
            )
        except RuntimeError as exc:  # "No valid images found in …": every image's labels were refused
            log.warning("ultralytics' own val did not run (%s); its figures are left out", reason_of(exc, 160))
            return None
    # ultralytics' class c is the dataset's class c (its labels' id), named as the dataset names it
    names = {**yolo.names, **dict(enumerate(data.names))}
    per_class = {names[int(c)]: float(ap) for c, ap in zip(m.box.ap_class_index, m.box.ap50)}
    return {
        "mAP50": float(m.box.map50),
        "mAP50-95": float(m.box.map),
        "precision": float(m.box.mp),
        "recall": float(m.box.mr),
        "per_class_mAP50": per_class,
    }


def report_tables(m: dict[str, Any]) -> list[ReportTable]:
    """The per-class table of :func:`validate`'s metrics, with ultralytics' figures beside them when run."""
    ul = m.get("ultralytics")
    columns = ("class", "instances", "precision", "recall", "mAP50", "mAP50-95") + (
        ("ultralytics mAP50",) if ul else ()
    )

    def row(name: str, d: dict[str, Any], ul_map50: float | None) -> tuple[str, ...]:
        cells = (name, str(d["instances"]), *(figure(d[k], 3) for k in ("precision", "recall", "mAP50", "mAP50-95")))
        return cells + ((figure(ul_map50, 3),) if ul else ())

    rows = [row("all", m, ul["mAP50"] if ul else None)]
    rows += [row(name, d, (ul or {}).get("per_class_mAP50", {}).get(name)) for name, d in m["per_class"].items()]
    notes = [runtime_note(m)]
    if ul:
        notes.append(
            f"ultralytics val (same weights, data): mAP50 {ul['mAP50']:.3f}  mAP50-95 {ul['mAP50-95']:.3f}  "
            f"P {ul['precision']:.3f}  R {ul['recall']:.3f}"
        )
    if m["failed"]:
        notes.append(f"{m['failed']} image(s) could not be read")
    title = f"{m['model']} on {m['data']} ({m['split']}, {m['images']} images, imgsz {m['imgsz']})"
    return [
        ReportTable(title, columns, rows, tuple(notes)),
        *([confusion_table(m["confusion"])] if "confusion" in m else []),
    ]
