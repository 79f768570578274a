"""``cnnkit instance``: Mask R-CNN instances (boxes + masks) per image, and ``instance val`` (COCO AP)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

app = c.task_app(
    "Instance segmentation: a box, label, score and mask per object. `cnnkit instance SOURCES...` runs "
    "[bold]predict[/bold]; `cnnkit instance val DATA` scores a COCO-format dataset."
)

MaskThreshold = Annotated[float, typer.Option("--mask-threshold", min=0.0, max=1.0, help="Soft-mask probability above which a pixel belongs to the instance.", rich_help_panel=o.PANEL_MODEL)]
_LOAD = ("model", "weights", "device", "threads")


@app.command("predict")
@o.compose(o.MODEL, o.BOXES, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=4, conf=0.5, max_det=100)
def predict(
    ctx: typer.Context,
    sources: o.Sources = None,
    mask_threshold: MaskThreshold = 0.5,
    classes: o.Classes = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Also write one PNG per instance into <save-dir>/masks (implies --save).", rich_help_panel=o.PANEL_IO)] = False,
    **shared: Any,
) -> None:
    """Instances in each image (masks as COCO RLE), from the bundled model, torchvision's COCO Mask R-CNNs or a finetune checkpoint.

    --classes keeps only those classes in the records (saved pictures and masks keep every instance).
    """
    from cnnkit.eval.coco import CocoResults

    c.run_predict(ctx, "instance", dict({k: shared[k] for k in (*_LOAD, "conf", "max_det", "half")},
                                        mask_threshold=mask_threshold, save_masks=save_masks),
                  save=True if save_masks else None, coco_builder=CocoResults() if shared["fmt"] == "coco" else None,
                  keep_classes=c.split_classes(classes))


@app.command("val")
@o.compose(o.MODEL, o.SPLIT, o.BOXES, o.OWN, o.RUN, o.REPORT_IO, batch_size=4, conf=0.001, max_det=100)
def val(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="COCO-format dataset: a folder with <split>/annotations.json + images, or the JSON file.")],
    mask_threshold: MaskThreshold = 0.5,
    **shared: Any,
) -> None:
    """bbox and segm AP, AP50, AP75 (pycocotools) on a COCO-format dataset."""
    data = c.local_data(ctx, data)
    from cnnkit.tasks.instance.val import validate

    from cnnkit.cli import reporting

    fmt = c.report_format(o.view_format(ctx, shared["fmt"]), shared["output"])
    report = reporting.start(shared["report"], shared["exist_ok"], "instance", data=data)
    summary = validate(data, **{k: shared[k] for k in (*_LOAD, "split", "conf", "max_det")},
                       mask_threshold=mask_threshold, batch_size=c.setting(ctx, "batch_size"), workers=c.setting(ctx, "workers"),
                       on_record=reporting.truth_hook(report))
    if report is not None:
        report.info["model"] = summary["model"]
        report.set_metrics(summary)
        reporting.finish(report)
    text = json.dumps(summary, indent=2) + "\n" if fmt == "json" else _table(summary)
    c.emit_report(text, shared["output"], shared["exist_ok"])
    if summary["failed"]:
        raise typer.Exit(c.EXIT_FAILED)


def _table(summary: dict) -> str:
    lines = [f"{summary['model']} on {summary['data']} ({summary['images']} images)",
             f"{'':8}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
    for kind in ("bbox", "segm"):
        m = summary[kind]
        lines.append(f"{kind:8}{m['AP']:8.4f}{m['AP50']:8.4f}{m['AP75']:8.4f}")
    return "\n".join(lines) + "\n"
