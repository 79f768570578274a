"""``cnnkit classify``: top-k labels per image."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

app = c.task_app("Classify images: top-k labels per image. `cnnkit classify SOURCES...` runs [bold]predict[/bold].")


@app.command("predict")
@o.compose(o.MODEL, o.BACKEND, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=16)
def predict(
    ctx: typer.Context, sources: o.Sources = None, topk: o.TopK = 5, imgsz: o.Imgsz = None, **shared: Any
) -> None:
    """Top-k labels for each image, from the bundled model, any registry model, or a finetune checkpoint."""
    load = {k: shared[k] for k in ("model", "weights", "backend", "device", "half", "threads")}
    c.run_predict(ctx, "classify", dict(load, topk=topk, imgsz=imgsz))


@app.command("val")
@o.compose(o.MODEL, o.BACKEND, o.SPLIT, o.RUN, o.REPORT_IO, o.OWN, batch_size=16)
def val(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="DATA/<class>/* (or DATA/val/<class>/* when DATA has train/ and val/).")],
    save_dir: o.SaveDir = None,
    **shared: Any,
) -> None:
    """Top-1, top-5, per-class precision/recall/F1 and the confusion matrix (table + PNG) on a labelled folder.

    The plot and metrics.json go to --save-dir (default: runs/classify/val, val2, …). Without --split, DATA/val
    is scored when DATA has train/ and val/ or a val/ (else test/) of class folders, else DATA itself (the val
    part of it, for weights a finetune run trained on DATA split by --val-split).
    """
    from pathlib import Path

    from cnnkit.cli.report import run_val
    from cnnkit.errors import printable
    from cnnkit.io.files import explicit_dir, increment_dir

    made: list[Path] = []

    def folder() -> Path:  # made once the data and the model are found, as before
        made.append(
            explicit_dir(save_dir, exist_ok=shared["exist_ok"])
            if save_dir
            else increment_dir(Path("runs/classify/val"), exist_ok=shared["exist_ok"])
        )
        return made[0]

    def said(result: dict[str, Any]) -> None:
        if c.state(ctx)["quiet"]:
            return
        typer.echo(
            f"{result['images']} image(s) scored, {len(result['failed'])} failed; "
            f"top-1 {result['top1']:.4f} top-5 {result['top5']:.4f}; wrote {made[0]}",
            err=True,
        )
        for item in result["failed"][:10]:
            typer.echo(f"  failed {printable(item['path'])}: {item['error']}", err=True)

    options = {k: shared[k] for k in ("model", "weights", "backend", "device", "threads")}
    split = shared["split"] if o.given(ctx, "split") else None
    run_val(ctx, "classify", data, dict(options, split=split, save_dir=folder), shared, done=said)
