"""``cnnkit segment``: a class per pixel, masks and overlays; ``cnnkit segment val DATA`` for mIoU."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cnnkit.cli import common as c
from cnnkit.config import MAX_IMGSZ, MAX_TILE
from cnnkit.io import DEFAULT_MAX_PIXELS

app = c.task_app(
    "Semantic segmentation: classes present per image, class-index mask and overlay PNGs with --save-dir. "
    "`cnnkit segment SOURCES...` runs [bold]predict[/bold]; `cnnkit segment val DATA` scores image/mask pairs."
)

Arch = Annotated[Optional[str], typer.Option("--arch", help="unet, unetplusplus, deeplabv3plus (smp, random init unless --weights), deeplabv3 or lraspp (torchvision VOC weights).", rich_help_panel=c.PANEL_MODEL)]
Encoder = Annotated[Optional[str], typer.Option("--encoder", help="smp encoder for --arch (e.g. resnet34, mobilenet_v2); for deeplabv3: resnet50, resnet101, mobilenet_v3_large.", rich_help_panel=c.PANEL_MODEL)]
ImgSz = Annotated[Optional[int], typer.Option("--imgsz", min=32, max=MAX_IMGSZ, help="Model input side; images are letterboxed to it (default: the model's).", rich_help_panel=c.PANEL_MODEL)]
Tile = Annotated[Optional[int], typer.Option("--tile", min=32, max=MAX_TILE, help="Cut images larger than N px into N×N windows (each resized to --imgsz) and blend them.", rich_help_panel=c.PANEL_MODEL)]
Overlap = Annotated[float, typer.Option("--overlap", min=0.0, max=0.89, help="Fraction by which neighbouring tiles overlap.", rich_help_panel=c.PANEL_MODEL)]


@app.command("predict")
def predict(
    ctx: typer.Context,
    sources: c.Sources = None,
    model: c.Model = None,
    weights: c.ExportedWeights = None,
    backend: c.Backend = None,
    arch: Arch = None,
    encoder: Encoder = None,
    imgsz: ImgSz = None,
    tile: Tile = None,
    overlap: Overlap = 0.25,
    batch_size: c.BatchSize = 8,
    workers: c.Workers = 2,
    device: c.Device = None,
    half: c.Half = False,
    threads: c.Threads = None,
    fmt: c.Format = "auto",
    output: c.Output = None,
    save: c.Save = False,
    save_dir: c.SaveDir = None,
    exist_ok: c.ExistOk = False,
    recursive: c.Recursive = False,
    shard: c.Shard = None,
    skip_existing: c.SkipExisting = False,
    max_pixels: c.MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Classes present in each image (pixels, fraction); --save-dir writes NAME_mask.png and NAME_overlay.png."""
    c.run_predict(ctx, "segment", dict(model=model, weights=weights, backend=backend, arch=arch, encoder=encoder,
                                       imgsz=imgsz, tile=tile, overlap=overlap, device=device, half=half,
                                       threads=threads))


@app.command("val")
def val(
    data: Annotated[str, typer.Argument(help="Folder with images/ and masks/ (or a root with train/ val/).")],
    split: Annotated[str, typer.Option("--split", help="Split folder used when DATA is a root.")] = "val",
    model: c.Model = None,
    weights: c.ExportedWeights = None,
    backend: c.Backend = None,
    arch: Arch = None,
    encoder: Encoder = None,
    imgsz: ImgSz = None,
    tile: Tile = None,
    overlap: Overlap = 0.25,
    batch_size: c.BatchSize = 8,
    workers: c.Workers = 2,
    device: c.Device = None,
    threads: c.Threads = None,
    fmt: c.ReportFormat = "auto",
    output: c.Output = None,
    exist_ok: c.ExistOk = False,
) -> None:
    """mIoU, per-class IoU and pixel accuracy of a model on image/mask pairs."""
    from cnnkit import api
    from cnnkit.tasks.segment.val import evaluate_folder, render_scores

    fmt = c.report_format(fmt, output)
    predictor = api.load("segment", model=model, weights=weights, backend=backend, arch=arch, encoder=encoder,
                         imgsz=imgsz, tile=tile, overlap=overlap, device=device, threads=threads)
    scores = evaluate_folder(predictor, data, split=split, batch_size=batch_size, workers=workers)
    text = json.dumps(scores, indent=2) + "\n" if fmt == "json" else render_scores(scores)
    c.emit_report(text, output, exist_ok)
