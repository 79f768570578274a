"""``cnnkit detect``: boxes per image (YOLO or Faster R-CNN), and ``detect val DATA.yaml``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

app = c.task_app(
    "Detect objects: boxes, labels and scores per image. `cnnkit detect SOURCES...` runs [bold]predict[/bold]; "
    "`cnnkit detect val DATA.yaml` scores a model on a YOLO-format dataset."
)

LOAD = ("model", "weights", "backend", "device", "threads")


def detector_options(
    shared: dict[str, Any], iou: float | None, agnostic_nms: bool, imgsz: int | None, classes: list[str] | None
) -> dict[str, Any]:
    """What ``detect`` and ``track`` load their detector with: the model, which boxes are kept, and whether
    pictures are drawn (``--save``, else on with ``--save-dir``)."""
    return dict(
        {k: shared[k] for k in LOAD},
        conf=shared["conf"],
        iou=iou,
        agnostic_nms=agnostic_nms,
        imgsz=imgsz,
        classes=c.split_classes(classes),
        max_det=shared["max_det"],
        half=shared["half"],
        save_pictures=shared["save"] if shared["save"] is not None else bool(shared["save_dir"]),
    )


# the box outputs beside the records, for detect and track (a video's frames get NAME-HASH_FRAME files)
SaveTxt = Annotated[
    bool,
    typer.Option(
        "--save-txt",
        help="Also write YOLO label files (class cx cy w h, normalised) to <save dir>/labels.",
        rich_help_panel=o.PANEL_IO,
    ),
]
SaveConf = Annotated[
    bool,
    typer.Option(
        "--save-conf", help="With --save-txt: add each box's score as a sixth column.", rich_help_panel=o.PANEL_IO
    ),
]
SaveCrop = Annotated[
    bool,
    typer.Option(
        "--save-crop", help="Also write one crop per box to <save dir>/crops/<label>.", rich_help_panel=o.PANEL_IO
    ),
]


@app.command("predict")
@o.compose(o.MODEL, o.BACKEND, o.BOXES, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=16)
def predict(
    ctx: typer.Context,
    sources: o.Sources = None,
    iou: o.Iou = None,
    agnostic_nms: o.AgnosticNms = False,
    imgsz: o.Imgsz = None,
    classes: o.Classes = None,
    save_txt: SaveTxt = False,
    save_conf: SaveConf = False,
    save_crop: SaveCrop = False,
    **shared: Any,
) -> None:
    """Boxes for each image: label, class_id, score and box (x1, y1, x2, y2) in the image's own pixels."""
    coco = None
    if shared["fmt"] == "coco":
        from cnnkit.eval.coco import CocoResults

        coco = CocoResults()
    options = detector_options(shared, iou, agnostic_nms, imgsz, classes)
    c.run_predict(
        ctx,
        "detect",
        dict(options, save_txt=save_txt, save_conf=save_conf, save_crop=save_crop),
        save=options["save_pictures"] or save_txt or save_crop,
        coco_builder=coco,
    )


@app.command("val")
@o.compose(o.MODEL, o.BACKEND, o.SPLIT, o.BOXES, o.OWN, o.RUN, o.REPORT_IO, batch_size=16, conf=0.001)
def val(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Argument(
            help="A YOLO dataset yaml (path/train/val/names), e.g. from `cnnkit data shapes OUT --layout yolo`."
        ),
    ],
    iou: o.Iou = None,
    imgsz: o.Imgsz = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare", help="Also run ultralytics' own val on the same weights and data (YOLO models)."
        ),
    ] = True,
    **shared: Any,
) -> None:
    """mAP50, mAP50-95, precision and recall, overall and per class, computed the COCO way from cnnkit's records."""
    from cnnkit.cli.report import run_val

    options = {k: shared[k] for k in (*LOAD, "split", "conf", "max_det")}
    run_val(ctx, "detect", data, dict(options, iou=iou, imgsz=imgsz, compare=compare), shared)
