"""``cnnkit instance``: Mask R-CNN instances (boxes + masks) per image, and ``instance val`` (COCO AP)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cnnkit.cli import common as c
from cnnkit.io import DEFAULT_MAX_PIXELS

app = c.task_app(
    "Instance segmentation: a box, label, score and mask per object. `cnnkit instance SOURCES...` runs "
    "[bold]predict[/bold]; `cnnkit instance val DATA` scores a COCO-format dataset."
)

Conf = Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Minimum score of a kept instance.", rich_help_panel=c.PANEL_MODEL)]
MaskThreshold = Annotated[float, typer.Option("--mask-threshold", min=0.0, max=1.0, help="Soft-mask probability above which a pixel belongs to the instance.", rich_help_panel=c.PANEL_MODEL)]
MaxDet = Annotated[int, typer.Option("--max-det", min=1, help="At most this many instances per image.", rich_help_panel=c.PANEL_MODEL)]


@app.command("predict")
def predict(
    ctx: typer.Context,
    sources: c.Sources = None,
    model: c.Model = None,
    weights: c.Weights = None,
    conf: Conf = 0.5,
    mask_threshold: MaskThreshold = 0.5,
    max_det: MaxDet = 100,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Also write one PNG per instance into <save-dir>/masks (implies --save).", rich_help_panel=c.PANEL_IO)] = False,
    batch_size: c.BatchSize = 4,
    workers: c.Workers = 2,
    device: c.Device = None,
    half: c.Half = False,
    threads: c.Threads = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto, table, json, jsonl, csv, or coco (COCO results JSON: bbox + segm).", rich_help_panel=c.PANEL_IO)] = "auto",
    output: c.Output = None,
    save: c.Save = False,
    save_dir: c.SaveDir = None,
    exist_ok: c.ExistOk = False,
    recursive: c.Recursive = False,
    shard: c.Shard = None,
    skip_existing: c.SkipExisting = False,
    max_pixels: c.MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Instances in each image (masks as COCO RLE), from the bundled model, torchvision's COCO Mask R-CNNs or a finetune checkpoint."""
    from cnnkit.eval.coco import CocoResults

    c.run_predict(ctx, "instance", dict(model=model, weights=weights, conf=conf, mask_threshold=mask_threshold,
                                        max_det=max_det, save_masks=save_masks, device=device, half=half,
                                        threads=threads),
                  save=True if save_masks else None, coco_builder=CocoResults() if fmt == "coco" else None)


@app.command("val")
def val(
    data: Annotated[str, typer.Argument(help="COCO-format dataset: a folder with <split>/annotations.json + images, or the JSON file.")],
    split: Annotated[str, typer.Option("--split", help="Which split of DATA to score.")] = "val",
    model: c.Model = None,
    weights: c.Weights = None,
    conf: Conf = 0.001,
    mask_threshold: MaskThreshold = 0.5,
    max_det: MaxDet = 100,
    batch_size: c.BatchSize = 4,
    workers: c.Workers = 2,
    device: c.Device = None,
    threads: c.Threads = None,
    fmt: c.ReportFormat = "auto",
    output: c.Output = None,
    exist_ok: c.ExistOk = False,
) -> None:
    """bbox and segm AP, AP50, AP75 (pycocotools) on a COCO-format dataset."""
    from cnnkit.tasks.instance.val import validate

    fmt = c.report_format(fmt, output)
    summary = validate(data, split=split, model=model, weights=weights, conf=conf, mask_threshold=mask_threshold,
                       max_det=max_det, batch_size=batch_size, workers=workers, device=device, threads=threads)
    text = json.dumps(summary, indent=2) + "\n" if fmt == "json" else _table(summary)
    c.emit_report(text, output, exist_ok)
    if summary["failed"]:
        raise typer.Exit(c.EXIT_FAILED)


def _table(summary: dict) -> str:
    lines = [f"{summary['model']} on {summary['data']} ({summary['images']} images)",
             f"{'':8}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
    for kind in ("bbox", "segm"):
        m = summary[kind]
        lines.append(f"{kind:8}{m['AP']:8.4f}{m['AP50']:8.4f}{m['AP75']:8.4f}")
    return "\n".join(lines) + "\n"
