"""``cnnkit export``: a trained model to ONNX or TorchScript, verified before it is kept."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cnnkit.cli import options as o
from cnnkit.cli.common import json_wanted
from cnnkit.cli.visual import PANEL


@o.renamed(fmt=("--format", "-f"), output="--out")
def export(
    model: Annotated[str, typer.Argument(help="Registry model name or a cnnkit .safetensors checkpoint.")],
    fmt: Annotated[str, typer.Option("--to", help="Model file type: onnx or torchscript.")] = "onnx",
    imgsz: o.Imgsz = None,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="Any batch size at run time (else batch 1).")
    ] = False,
    output: o.Output = None,
    task: o.Task = None,
    exist_ok: o.ExistOk = False,
    int8: o.Int8 = False,
    calibrate: o.Calibrate = None,
    val: o.ValData = None,
    max_drop: o.MaxDrop = 1.0,
) -> None:
    """Export with labels and preprocessing inside; kept only if it reproduces PyTorch's outputs.

    --output defaults to beside the checkpoint, or runs/export/NAME.onnx.

    ONNX is checked with onnxruntime, TorchScript by loading it back: |export − torch| ≤ 1e-4 + 1e-3·max|torch|.
    Run an ONNX file with `cnnkit classify IMAGES --weights model.onnx --backend onnxruntime`.
    --int8 --calibrate DIR writes an INT8 ONNX file (runs/export/NAME-int8.onnx), refused when it loses more
    than --max-drop points on --val.
    Prints JSON when stdout is not a terminal.
    """
    from cnnkit.errors import UsageError
    from cnnkit.export import FORMATS, export_model

    if fmt not in FORMATS:  # said here, in the flag's own name
        raise UsageError(f"--to {fmt!r}: expected {' or '.join(FORMATS)}")
    if output == "-":
        raise UsageError("--output -: a model is written to a file, not to stdout; name one (e.g. model.onnx)")
    if int8 or calibrate or val:
        _int8(model, fmt, int8, calibrate, val, max_drop, imgsz, output, exist_ok, task)
        return
    result = export_model(
        model, fmt=fmt, imgsz=imgsz, dynamic_batch=dynamic_batch, out=output, overwrite=exist_ok, task=task
    )
    if json_wanted("auto"):
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(
        f"saved {result.path} ({result.size_mb} MB, {result.format}, input {result.input}) in {result.seconds} s"
    )
    typer.echo(
        f"verified with {result.verified_with}: max |export − torch| = {result.max_abs_diff:.3g} ({result.tolerance})"
    )


def _int8(
    model: str,
    to: str,
    int8: bool,
    calibrate: str | None,
    val: str | None,
    max_drop: float,
    imgsz: int | None,
    output: str | None,
    exist_ok: bool,
    task: str | None,
) -> None:
    """``--int8``: the quantized ONNX file, or the reason it was refused."""
    from cnnkit.errors import UsageError
    from cnnkit.quantize import export_int8

    if not int8:
        raise UsageError("--calibrate and --val go with --int8")
    if to != "onnx" or calibrate is None:
        raise UsageError("--int8 writes ONNX (--to onnx) and needs --calibrate DIR")
    result = export_int8(
        model, calibrate=calibrate, out=output, val=val, max_drop=max_drop, imgsz=imgsz, overwrite=exist_ok, task=task
    )
    if json_wanted("auto"):
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(
        f"saved {result.path} ({result.size_mb} MB INT8, fp32 {result.fp32_size_mb} MB) in {result.seconds} s, "
        f"calibrated on {result.calibration_images} images"
    )
    if result.metric:
        typer.echo(
            f"{result.metric} on --val: fp32 {result.fp32:.4f}, int8 {result.int8:.4f} "
            f"(drop {result.drop_points} points, limit {result.max_drop})"
        )


def register(app: typer.Typer) -> None:
    """Add the command to the root app (one line in :mod:`cnnkit.cli`)."""
    app.command("export", rich_help_panel=PANEL)(export)
