"""``cnnkit classify``: top-k labels per image."""

from __future__ import annotations

from typing import Annotated

import typer

from cnnkit.cli import common as c
from cnnkit.io import DEFAULT_MAX_PIXELS

app = c.task_app("Classify images: top-k labels per image. `cnnkit classify SOURCES...` runs [bold]predict[/bold].")


@app.command("predict")
def predict(
    ctx: typer.Context,
    sources: c.Sources = None,
    model: c.Model = None,
    weights: c.Weights = None,
    backend: c.Backend = None,
    topk: Annotated[int, typer.Option("--topk", "-k", min=1, help="How many labels per image.", rich_help_panel=c.PANEL_MODEL)] = 5,
    batch_size: c.BatchSize = 16,
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
    """Top-k labels for each image, from the bundled model, any registry model, or a finetune checkpoint."""
    c.run_predict(
        ctx, "classify", c.require_sources(sources),
        load_options=dict(model=model, weights=weights, backend=backend, topk=topk, device=device, half=half, threads=threads),
        batch_size=batch_size, workers=workers, fmt=fmt, output=output, save=save, save_dir=save_dir,
        exist_ok=exist_ok, recursive=recursive, shard=shard, skip_existing=skip_existing, max_pixels=max_pixels,
    )
