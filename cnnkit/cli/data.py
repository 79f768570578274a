"""``cnnkit data``: make datasets (synthetic shapes, real digits)."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from cnnkit.cli import options as o

log = logging.getLogger("cnnkit")

app = typer.Typer(help="Make datasets: synthetic `shapes` scenes and scikit-learn's real digits.", no_args_is_help=True)


def _target(out: str, exist_ok: bool) -> None:
    """Make the output folder; one already holding files is written into (with ``--exist-ok``), and said so:
    an earlier cnnkit dataset's files go (each writer removes its own kind), any others stay and would mix in."""
    from pathlib import Path

    from cnnkit.io.files import explicit_dir

    held = Path(out).is_dir() and any(Path(out).iterdir())
    explicit_dir(out, exist_ok=exist_ok)
    if held:
        log.warning(
            "%s already holds files: an earlier cnnkit dataset's are replaced, any others stay (delete the folder "
            "for a clean one)",
            out,
        )


Out = Annotated[str, typer.Argument(help="Output folder (must not exist, unless --exist-ok).")]


@app.command("shapes")
@o.renamed(layout=("--format", "-f"), val_split="--val-fraction")
def shapes_cmd(
    ctx: typer.Context,
    out: Out,
    layout: Annotated[str, typer.Option("--layout", help="Dataset layout: imagefolder, yolo, masks or coco.")] = "yolo",
    n: Annotated[
        int, typer.Option("--n", min=1, help="Number of images (train + val), or of videos with --video.")
    ] = 100,
    seed: o.Seed = 0,
    imgsz: o.Imgsz = 256,
    val_split: o.ValSplit = 0.2,
    video: Annotated[
        bool,
        typer.Option(
            "--video",
            help="Write --n videos of moving shapes (shapes-000.mp4 …) with MOT ground truth instead (for `cnnkit track val`).",
        ),
    ] = False,
    frames: Annotated[int, typer.Option("--frames", min=2, help="With --video: frames per video.")] = 60,
    fps: Annotated[float, typer.Option("--fps", min=1.0, max=240.0, help="With --video: frame rate.")] = 25.0,
    exist_ok: o.ExistOk = False,
) -> None:
    """Deterministic synthetic scenes of shapes (a pure function of seed and index) with boxes, instance and
    semantic masks; --imgsz is the image side (at least 16). A shape less than 40% in view (under others or past
    the edge) is drawn but labelled in no layout (background in the masks), as too little of it shows. With --video: videos of shapes that move, cross,
    occlude each other, enter and leave, with MOT ground truth and the true crossings of a counting line."""
    from cnnkit.cli.options import given
    from cnnkit.data.export import FORMATS, export_shapes
    from cnnkit.errors import OptionError, UsageError

    unused = ("layout", "val_split") if video else ("frames", "fps")
    for name in (n for n in unused if given(ctx, n)):  # silently ignored, a wrong dataset looked right
        raise OptionError(name, "is for still scenes, not `video`" if video else "is for `video`")
    if video:
        from cnnkit.data.moving import write_sequences

        if imgsz is None or imgsz < 64:
            raise UsageError(f"--imgsz {imgsz}: moving shapes need at least 64 pixels")
        _target(out, exist_ok)
        summary = write_sequences(out, n, seed=seed or 0, frames=frames, size=imgsz, fps=fps, overwrite=exist_ok)
        typer.echo(json.dumps(summary))
        return

    if layout not in FORMATS:
        raise UsageError(f"--layout {layout!r}: expected one of {', '.join(FORMATS)}")
    if imgsz is None or imgsz < 16:
        raise UsageError(f"--imgsz {imgsz}: shapes scenes are at least 16 pixels")
    _target(out, exist_ok)
    summary = export_shapes(out, layout, n, seed=seed or 0, imgsz=imgsz, val_fraction=val_split or 0.0)
    if layout != "imagefolder" and not summary.get("val"):  # imagefolder: finetune carves its own
        log.warning("%s: no val images; finetune and val need some (raise --val-split or --n)", out)
    if not summary.get("train"):
        log.warning("%s: no train images; finetune needs some (lower --val-split or raise --n)", out)
    typer.echo(json.dumps(summary))


@app.command("digits")
@o.renamed(val_split="--val-fraction")
def digits_cmd(
    out: Out,
    val_split: o.ValSplit = 0.2,
    seed: o.Seed = 0,
    imgsz: o.Imgsz = 32,
    exist_ok: o.ExistOk = False,
) -> None:
    """scikit-learn's 1,797 real handwritten digits as a folder dataset (train/val/<digit>/), upscaled from 8×8 to
    --imgsz."""
    from cnnkit.data.export import export_digits

    _target(out, exist_ok)
    typer.echo(json.dumps(export_digits(out, val_fraction=val_split or 0.0, seed=seed or 0, size=imgsz or 32)))
