"""``cnnkit summary``, ``features``, ``filters`` and ``conv``: how CNNs see, from the shell.

The commands only parse options and render; the work is in :mod:`cnnkit.viz`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from cnnkit.cli import options as o
from cnnkit.cli.common import json_wanted
from cnnkit.config import MAX_PADDING

PANEL = "How CNNs see"


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _xy(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return str(v[0]) if len(set(v)) == 1 else "×".join(str(x) for x in v)


def summary(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="Registry model name (see `cnnkit models`) or a cnnkit .safetensors checkpoint.")
    ] = "shapes-cnn",
    imgsz: o.Imgsz = None,
    fmt: o.Format = "auto",
) -> None:
    """Layers with kernel, stride, padding, output shape, parameters, receptive field, jump and multiply-adds.

    Receptive field (RF) and jump are in input pixels: r_out = r_in + (k-1)·j_in, j_out = j_in·s.
    """
    from cnnkit.cli.tables import Column, render
    from cnnkit.viz.summary import summarize_target

    s = summarize_target(model, imgsz)
    if json_wanted(fmt, ctx):
        typer.echo(json.dumps(s.to_dict(), indent=2))
        return
    shape = "×".join(str(d) for d in s.input[1:])
    columns = [
        Column("name", "layer", keep=True, footer="total"),
        Column("params", "params", right=True, keep=True, footer=f"{s.params:,}"),
        Column("output", "output C×H×W"),
        Column("type", "type"),
        Column("rf", "RF", right=True, footer=_xy(s.rf)),
        Column("macs", "mult-adds", right=True, footer=_human(s.macs)),
        Column("kernel", "kernel"),
        Column("stride", "stride"),
        Column("padding", "pad"),
        Column("jump", "jump", right=True, footer=_xy(s.jump)),
    ]
    rows = [
        {
            "name": r.name,
            "type": r.type,
            "kernel": _xy(r.kernel),
            "stride": _xy(r.stride),
            "padding": _xy(r.padding),
            "output": "×".join(str(d) for d in r.output),
            "params": f"{r.params:,}" if r.params else "",
            "rf": _xy(r.rf),
            "jump": _xy(r.jump),
            "macs": _human(r.macs) if r.macs else "",
        }
        for r in s.layers
    ]
    typer.echo(render(columns, rows, title=f"{s.model} on a {shape} input"), nl=False)
    typer.echo(
        f"parameters {s.params:,} ({s.trainable:,} trainable, {s.params * 4 / 1e6:.1f} MB as fp32) · "
        f"mult-adds {_human(s.macs)} per image · receptive field {_xy(s.rf)} px, jump {_xy(s.jump)} px"
    )


def _default_out(kind: str, *parts: str) -> str:
    """``runs/KIND/PART-PART….png``; path separators inside names are made harmless."""
    from pathlib import Path

    stem = "-".join(p.replace("/", "_").replace("\\", "_") for p in parts if p)
    return str(Path("runs") / kind / f"{stem}.png")


@o.renamed(kernel="-k", output="--out")
def conv(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="An image, or a small matrix as text (rows of numbers) or .npy.")],
    kernel: Annotated[
        str, typer.Option("--kernel", help="edge, sobel-x, sobel-y, blur, sharpen, identity, or a matrix FILE.")
    ] = "edge",
    stride: Annotated[int, typer.Option("--stride", "-s", min=1, help="How far the kernel moves each step.")] = 1,
    padding: Annotated[
        int,
        typer.Option(
            "--padding",
            "-p",
            min=0,
            max=MAX_PADDING,
            help="Zeros added around the border (more than the kernel adds only zeros).",
        ),
    ] = 0,
    pool: Annotated[
        Optional[int],
        typer.Option("--pool", min=2, help="Then max-pool with this window and stride (2 halves each side)."),
    ] = None,
    rgb: Annotated[bool, typer.Option("--rgb", help="Convolve each colour channel instead of a grey version.")] = False,
    output: o.Output = None,
    exist_ok: o.ExistOk = False,
    fmt: o.Format = "auto",
) -> None:
    """Apply one kernel (and optionally max pooling) and print the output size that stride and padding give.

    Output size per side: ⌊(n + 2·padding − k) / stride⌋ + 1. Matrix inputs print their result.
    --output: a .png/.jpg picture, .npy, .txt or .csv (default for images: runs/conv/STEM-KERNEL.png).
    """
    out = output
    from pathlib import Path

    from cnnkit.io.files import check_outputs
    from cnnkit.viz import conv as cv

    check_outputs({"`output`": out}, [image])  # never over the image it reads, even with --exist-ok
    name, k = cv.resolve_kernel(kernel)
    is_matrix = Path(image).suffix.lower() in cv.MATRIX_SUFFIXES
    if is_matrix:
        x = cv.read_matrix(image)
    else:
        x = cv.image_input(cv.read_image(image), keep_colour=rgb)
    result = cv.convolve(x, k, stride=stride, padding=padding, pool=pool, kernel_name=name)
    numbered = out is None
    if out is None and not is_matrix:
        tag = f"-s{stride}" * (stride > 1) + f"-p{padding}" * (padding > 0) + f"-pool{pool}" * bool(pool)
        out = _default_out("conv", Path(image).stem, name + tag)
    saved = str(cv.save_result(result, Path(out), overwrite=exist_ok, numbered=numbered)) if out else None
    data = {"input": image, **result.to_dict(with_values=is_matrix), "saved": saved}
    if json_wanted(fmt, ctx):
        typer.echo(json.dumps(data))
        return
    h, w = result.input_size
    typer.echo(f"input {h}×{w} · kernel {name} {k.shape[0]}×{k.shape[1]} · stride {stride} · padding {padding}")
    for step in result.steps:
        typer.echo(step)
    if is_matrix:
        typer.echo("output:")
        for row in data["output"]:
            typer.echo("  " + " ".join(f"{v:>6}" for v in row))
    if saved:
        typer.echo(f"saved {saved}")


def _report(ctx: typer.Context, info: dict[str, Any], fmt: str) -> None:
    if json_wanted(fmt, ctx):
        typer.echo(json.dumps(info))
    else:
        typer.echo(f"saved {info['saved']}")
        if "input" in info:
            typer.echo(f"  input: {'×'.join(str(d) for d in info['input']['shape'])}, {info['input']['as_seen']}")
        for layer in info.get("layers", [info]):
            typer.echo(f"  {layer['layer']}: {'×'.join(str(d) for d in layer['shape'])}")


@o.renamed(output="--out")
def features(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="The image to look at.")],
    model: o.Model = None,
    weights: o.Weights = None,
    layer: o.Layers = None,
    channels: Annotated[
        int, typer.Option("--channels", "-c", min=1, max=64, help="Most active channels shown per layer.")
    ] = 8,
    cell: o.Cell = 96,
    output: o.Output = None,
    exist_ok: o.ExistOk = False,
    fmt: o.Format = "auto",
) -> None:
    """Feature maps of IMAGE at chosen layers as a PNG grid: edges early, object parts deep (default model: shapes-cnn).

    The first row is the input as the model sees it (cropped, letterboxed or resized as its task does).
    --output defaults to runs/features/IMAGE-MODEL.png (IMAGE-MODEL-LAYER.png with --layer; a taken name
    becomes NAME-2.png …).
    """
    out = output
    from pathlib import Path

    from cnnkit.errors import CnnkitError
    from cnnkit.io.decode import decode
    from cnnkit.io.files import check_outputs
    from cnnkit.viz.features import feature_figure, load_for_viewing, picture_format, save_figure

    if out:
        picture_format(out)  # a bad name is said before the model loads
    check_outputs({"`output`": out}, [image])  # never over the image it reads, even with --exist-ok
    try:
        rgb = decode(image).rgb
    except CnnkitError as exc:
        raise CnnkitError(f"{image}: {exc}") from None
    loaded = load_for_viewing(model, weights)
    figure, info = feature_figure(loaded, rgb, layer, channels=channels, cell=cell)
    target = out or _default_out("features", Path(image).stem, loaded.name, _layers_tag(layer))
    saved = save_figure(figure, target, overwrite=exist_ok, numbered=out is None)
    _report(ctx, {"saved": saved, "image": image, **info}, fmt)


def _layers_tag(layers: list[str] | None) -> str:
    """The chosen layers for a file name: all of them joined by ``+``, or the first and how many more."""
    if not layers:
        return ""
    joined = "+".join(layers)
    return joined if len(joined) <= 80 else f"{layers[0][:80]}+{len(layers) - 1}more"


@o.renamed(output="--out")
def filters(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="Registry model name, a cnnkit .safetensors checkpoint or an ultralytics .pt.")
    ] = "shapes-cnn",
    layer: o.Layers = None,
    cell: o.Cell = 48,
    output: o.Output = None,
    exist_ok: o.ExistOk = False,
    fmt: o.Format = "auto",
) -> None:
    """The learned kernels of the first convolution (or one --layer) as a PNG grid.

    --output defaults to runs/filters/MODEL-LAYER.png (a taken name becomes NAME-2.png …).
    """
    from cnnkit.errors import UsageError
    from cnnkit.viz.features import filter_figure, load_for_viewing, picture_format, save_figure

    if layer and len(layer) > 1:
        raise UsageError(f"--layer: filters shows one layer, got {len(layer)}")
    if output:
        picture_format(output)  # a bad name is said before the model loads
    loaded = load_for_viewing(model)
    figure, info = filter_figure(loaded, layer[0] if layer else None, cell=cell)
    target = output or _default_out("filters", loaded.name, info["layer"])
    saved = save_figure(figure, target, overwrite=exist_ok, numbered=output is None)
    _report(ctx, {"saved": saved, **info}, fmt)


def register(app: typer.Typer) -> None:
    """Add the commands to the root app (one line in :mod:`cnnkit.cli`)."""
    app.command("summary", rich_help_panel=PANEL)(summary)
    app.command("features", rich_help_panel=PANEL)(features)
    app.command("filters", rich_help_panel=PANEL)(filters)
    app.command("conv", rich_help_panel=PANEL)(conv)
