"""``cnnkit export``: a trained model to ONNX or TorchScript, verified before it is kept."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cnnkit.cli.common import ExistOk
from cnnkit.cli.visual import PANEL, ImgSize, _json_wanted


def export(
    model: Annotated[str, typer.Argument(help="Registry model name or a cnnkit .safetensors checkpoint.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    imgsz: ImgSize = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Any batch size at run time (else batch 1).")] = False,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="File to write (default: beside the checkpoint, or runs/export/NAME.onnx).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task of a file that does not say it (default: from the registry or checkpoint).")] = None,
    exist_ok: ExistOk = False,
) -> None:
    """Export with labels and preprocessing inside; kept only if it reproduces PyTorch's outputs.

    ONNX is checked with onnxruntime, TorchScript by loading it back: |export − torch| ≤ 1e-4 + 1e-3·max|torch|.
    Run an ONNX file with `cnnkit classify IMAGES --weights model.onnx --backend onnxruntime`.
    Prints JSON when stdout is not a terminal.
    """
    from cnnkit.export import export_model

    result = export_model(model, fmt=fmt, imgsz=imgsz, dynamic_batch=dynamic_batch, out=out, overwrite=exist_ok, task=task)
    if _json_wanted("auto"):
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(f"saved {result.path} ({result.size_mb} MB, {result.format}, input {result.input}) in {result.seconds} s")
    typer.echo(f"verified with {result.verified_with}: max |export − torch| = {result.max_abs_diff:.3g} ({result.tolerance})")


def register(app: typer.Typer) -> None:
    """Add the command to the root app (one line in :mod:`cnnkit.cli`)."""
    app.command("export", rich_help_panel=PANEL)(export)

