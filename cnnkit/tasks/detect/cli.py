"""``cnnkit detect``: boxes per image (YOLO or Faster R-CNN), and ``detect val DATA.yaml``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cnnkit.cli import common as c
from cnnkit.config import MAX_IMGSZ
from cnnkit.io import DEFAULT_MAX_PIXELS

app = c.task_app(
    "Detect objects: boxes, labels and scores per image. `cnnkit detect SOURCES...` runs [bold]predict[/bold]; "
    "`cnnkit detect val DATA.yaml` scores a model on a YOLO-format dataset."
)

Conf = Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Minimum confidence of a box.", rich_help_panel=c.PANEL_MODEL)]
Iou = Annotated[float, typer.Option("--iou", min=0.0, max=1.0, help="IoU threshold of non-maximum suppression.", rich_help_panel=c.PANEL_MODEL)]
Imgsz = Annotated[Optional[int], typer.Option("--imgsz", min=32, max=MAX_IMGSZ, help="Inference size in pixels \\[default: the model's training size, else 640; Faster R-CNN: its min_size].", rich_help_panel=c.PANEL_MODEL)]
MaxDet = Annotated[int, typer.Option("--max-det", min=1, help="At most this many boxes per image.", rich_help_panel=c.PANEL_MODEL)]
DetModel = Annotated[Optional[str], typer.Option("--model", "-m", help="Registry name (default shapes-yolov8n; yolov8n.pt, yolo11n.pt, fasterrcnn_resnet50_fpn_v2, …) or a local ultralytics .pt.", rich_help_panel=c.PANEL_MODEL)]
DetWeights = Annotated[Optional[str], typer.Option("--weights", "-w", help="An ultralytics .pt (e.g. from `cnnkit finetune --task detect`), a .onnx or .torchscript from `cnnkit export <yolo>`, or for fasterrcnn_* a cnnkit .safetensors / state dict.", rich_help_panel=c.PANEL_MODEL)]


def _classes(value: Optional[list[str]]) -> Optional[list[str]]:
    """``--classes 0 2`` or ``--classes circle,star`` → one flat list."""
    if not value:
        return None
    return [part for v in value for part in v.replace(",", " ").split()]


@app.command("predict")
def predict(
    ctx: typer.Context,
    sources: c.Sources = None,
    model: DetModel = None,
    weights: DetWeights = None,
    backend: c.Backend = None,
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    imgsz: Imgsz = None,
    classes: Annotated[Optional[list[str]], typer.Option("--classes", help="Keep only these classes (ids or names; repeat or comma-separate).", rich_help_panel=c.PANEL_MODEL)] = None,
    max_det: MaxDet = 300,
    batch_size: c.BatchSize = 16,
    workers: c.Workers = 2,
    device: c.Device = None,
    half: c.Half = False,
    threads: c.Threads = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto (table on a terminal, else jsonl), table, json, jsonl, csv, coco (COCO results JSON).", rich_help_panel=c.PANEL_IO)] = "auto",
    output: c.Output = None,
    save: Annotated[Optional[bool], typer.Option("--save/--no-save", help="Write annotated pictures to runs/detect/exp, exp2, … (default: on with --save-dir).", rich_help_panel=c.PANEL_IO)] = None,
    save_dir: c.SaveDir = None,
    save_txt: Annotated[bool, typer.Option("--save-txt", help="Also write YOLO label files (class cx cy w h score) to <save dir>/labels.", rich_help_panel=c.PANEL_IO)] = False,
    save_crop: Annotated[bool, typer.Option("--save-crop", help="Also write one crop per box to <save dir>/crops/<label>.", rich_help_panel=c.PANEL_IO)] = False,
    exist_ok: c.ExistOk = False,
    recursive: c.Recursive = False,
    shard: c.Shard = None,
    skip_existing: c.SkipExisting = False,
    max_pixels: c.MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Boxes for each image: label, class_id, score and box (x1, y1, x2, y2) in the image's own pixels."""
    pictures = save if save is not None else bool(save_dir)
    coco = None
    if fmt == "coco":
        from cnnkit.eval.coco import CocoResults

        coco = CocoResults()
    c.run_predict(
        ctx, "detect",
        dict(model=model, weights=weights, backend=backend, conf=conf, iou=iou, imgsz=imgsz, classes=_classes(classes),
             max_det=max_det, device=device, half=half, threads=threads, save_pictures=pictures, save_txt=save_txt,
             save_crop=save_crop),
        save=pictures or save_txt or save_crop, coco_builder=coco,
    )


@app.command("val")
def val(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="A YOLO dataset yaml (path/train/val/names), e.g. from `cnnkit data shapes OUT --format yolo`.")],
    model: DetModel = None,
    weights: DetWeights = None,
    backend: c.Backend = None,
    split: Annotated[str, typer.Option("--split", help="Which split of the yaml to score (val, test, train).")] = "val",
    conf: Conf = 0.001,
    iou: Iou = 0.7,
    imgsz: Imgsz = None,
    max_det: MaxDet = 300,
    batch_size: c.BatchSize = 16,
    workers: c.Workers = 2,
    device: c.Device = None,
    threads: c.Threads = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also run ultralytics' own val on the same weights and data (YOLO models).")] = True,
    fmt: c.ReportFormat = "auto",
    output: c.Output = None,
    exist_ok: c.ExistOk = False,
) -> None:
    """mAP50, mAP50-95, precision and recall, overall and per class, computed the COCO way from cnnkit's records."""
    from cnnkit.tasks.detect.val import render_metrics, validate

    fmt = c.report_format(fmt, output)
    metrics = validate(
        data, model=model, weights=weights, split=split, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det,
        batch_size=batch_size, workers=workers, device=device, threads=threads, compare=compare, backend=backend,
    )
    c.emit_report(render_metrics(metrics, fmt), output, exist_ok)
