"""``cnnkit instance``: Mask R-CNN instances (boxes + masks) per image, and ``instance val`` (COCO AP)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

app = c.task_app(
    "Instance segmentation: a box, label, score and mask per object. `cnnkit instance SOURCES...` runs "
    "[bold]predict[/bold]; `cnnkit instance val DATA` scores a COCO-format dataset."
)

MaskThreshold = Annotated[
    float,
    typer.Option(
        "--mask-threshold",
        min=0.0,
        max=1.0,
        help="Soft-mask probability from which (at least) a pixel belongs to the instance, as torchvision pastes masks; 0 takes every pixel of the image.",
        rich_help_panel=o.PANEL_MODEL,
    ),
]
_LOAD = ("model", "weights", "device", "threads")


@app.command("predict")
@o.compose(o.MODEL, o.BOXES, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=4, conf=0.5, max_det=100)
def predict(
    ctx: typer.Context,
    sources: o.Sources = None,
    mask_threshold: MaskThreshold = 0.5,
    classes: o.Classes = None,
    agnostic_nms: o.AgnosticNms = False,
    save_masks: Annotated[
        bool,
        typer.Option(
            "--save-masks",
            help="Also write one PNG per instance into <save-dir>/masks (implies --save).",
            rich_help_panel=o.PANEL_IO,
        ),
    ] = False,
    **shared: Any,
) -> None:
    """Instances in each image (masks as COCO RLE), from the bundled model, torchvision's COCO Mask R-CNNs or a finetune checkpoint.

    --classes keeps only instances of those classes, in the records, pictures and masks alike.
    """
    from cnnkit.eval.coco import CocoResults

    c.run_predict(
        ctx,
        "instance",
        dict(
            {k: shared[k] for k in (*_LOAD, "conf", "max_det", "half")},
            mask_threshold=mask_threshold,
            save_masks=save_masks,
            classes=c.split_classes(classes),
            agnostic_nms=agnostic_nms,
        ),
        save=True if save_masks else None,
        coco_builder=CocoResults() if shared["fmt"] == "coco" else None,
    )


@app.command("val")
@o.compose(o.MODEL, o.SPLIT, o.BOXES, o.OWN, o.RUN, o.REPORT_IO, batch_size=4, conf=0.001, max_det=100)
def val(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Argument(help="COCO-format dataset: a folder with <split>/annotations.json + images, or the JSON file."),
    ],
    mask_threshold: MaskThreshold = 0.5,
    **shared: Any,
) -> None:
    """bbox and segm AP, AP50, AP75 (pycocotools) on a COCO-format dataset."""
    from cnnkit.cli.report import run_val

    options = {k: shared[k] for k in (*_LOAD, "split", "conf", "max_det")}
    run_val(ctx, "instance", data, dict(options, mask_threshold=mask_threshold), shared)
