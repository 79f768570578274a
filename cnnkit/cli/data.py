"""``cnnkit data``: make datasets (synthetic shapes, real digits)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cnnkit.cli.common import ExistOk
from cnnkit.config import MAX_IMGSZ

app = typer.Typer(help="Make datasets: synthetic `shapes` scenes and scikit-learn's real digits.", no_args_is_help=True)


def _target(out: str, exist_ok: bool) -> None:
    from cnnkit.io.files import explicit_dir

    explicit_dir(out, exist_ok=exist_ok)


@app.command("shapes")
def shapes_cmd(
    out: Annotated[str, typer.Argument(help="Output folder (must not exist, unless --exist-ok).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="imagefolder, yolo, masks or coco.")] = "yolo",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images (train + val).")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Scenes are a pure function of (seed, index).")] = 0,
    imgsz: Annotated[int, typer.Option("--imgsz", min=16, max=MAX_IMGSZ, help="Image side in pixels.")] = 256,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of images in val.")] = 0.2,
    exist_ok: ExistOk = False,
) -> None:
    """Deterministic synthetic scenes of shapes with boxes, instance and semantic masks."""
    from cnnkit.data.export import FORMATS, export_shapes
    from cnnkit.errors import UsageError

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _target(out, exist_ok)
    summary = export_shapes(out, fmt, n, seed=seed, imgsz=imgsz, val_fraction=val_fraction)
    typer.echo(json.dumps(summary))


@app.command("digits")
def digits_cmd(
    out: Annotated[str, typer.Argument(help="Output folder (must not exist, unless --exist-ok).")],
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9)] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    imgsz: Annotated[int, typer.Option("--imgsz", min=8, max=MAX_IMGSZ, help="Upscale the 8x8 digits to this size.")] = 32,
    exist_ok: ExistOk = False,
) -> None:
    """scikit-learn's 1,797 real handwritten digits as a folder dataset (train/val/<digit>/)."""
    from cnnkit.data.export import export_digits

    _target(out, exist_ok)
    typer.echo(json.dumps(export_digits(out, val_fraction=val_fraction, seed=seed, size=imgsz)))
