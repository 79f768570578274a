"""``cnnkit segment``: a class per pixel, masks and overlays; ``cnnkit segment val DATA`` for mIoU."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o
from cnnkit.config import MAX_TILE

app = c.task_app(
    "Semantic segmentation: classes present per image, class-index mask and overlay PNGs with --save-dir. "
    "`cnnkit segment SOURCES...` runs [bold]predict[/bold]; `cnnkit segment val DATA` scores image/mask pairs."
)

Tile = Annotated[
    Optional[int],
    typer.Option(
        "--tile",
        min=32,
        max=MAX_TILE,
        help="Cut images larger than N px into N×N windows (each resized to --imgsz) and blend them.",
        rich_help_panel=o.PANEL_MODEL,
    ),
]
Overlap = Annotated[
    float,
    typer.Option(
        "--overlap",
        min=0.0,
        max=0.89,
        help="Fraction by which neighbouring tiles overlap.",
        rich_help_panel=o.PANEL_MODEL,
    ),
]
# The model options predict and val share: one group, so neither command repeats the other.
SEGMENTER = o.group(
    arch=(o.Arch, None), encoder=(o.Encoder, None), imgsz=(o.Imgsz, None), tile=(Tile, None), overlap=(Overlap, 0.25)
)
_LOAD = ("model", "weights", "backend", "arch", "encoder", "imgsz", "tile", "overlap", "device", "threads")


@app.command("predict")
@o.compose(o.MODEL, o.BACKEND, SEGMENTER, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=8)
def predict(ctx: typer.Context, sources: o.Sources = None, classes: o.Classes = None, **shared: Any) -> None:
    """Classes present in each image (pixels, fraction); --save-dir writes NAME-HASH_mask.png and NAME-HASH_overlay.png.

    --classes keeps only those classes: other pixels become background in the masks and overlays, and the records list
    only the kept classes (their pixels then add up to less than the image).
    """
    c.run_predict(
        ctx, "segment", dict({k: shared[k] for k in _LOAD}, half=shared["half"], classes=c.split_classes(classes))
    )


@app.command("val")
@o.compose(o.MODEL, o.BACKEND, o.SPLIT, SEGMENTER, o.RUN, o.REPORT_IO, batch_size=8)
def val(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Folder with images/ and masks/ (or a root with train/ val/).")],
    **shared: Any,
) -> None:
    """mIoU, per-class IoU and pixel accuracy of a model on image/mask pairs (--split: the folder used when DATA
    is a root)."""
    from cnnkit.cli.report import run_val

    run_val(ctx, "segment", data, dict({k: shared[k] for k in _LOAD}, split=shared["split"]), shared)
