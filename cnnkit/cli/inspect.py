"""``cnnkit models`` and ``cnnkit info``: what this installation knows and has."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer


def _emit(rows: list[dict], fmt: str, columns: list[str], title: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    if fmt == "json" or (fmt == "auto" and not sys.stdout.isatty()):
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, overflow="fold", no_wrap=i == 0)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def models(
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="classify, detect, segment or instance.")] = None,
    pattern: Annotated[str, typer.Argument(help="fnmatch filter on names, e.g. 'resnet*'.")] = "*",
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto, table or json.")] = "auto",
) -> None:
    """Every model the registry knows: task, parameters, size, weights source, available now or not."""
    from cnnkit.models.describe import describe
    from cnnkit.models.registry import list_models

    rows = [describe(s) for s in list_models(pattern, task=task)]
    for r in rows:
        r["parameters_m"] = round(r["parameters"] / 1e6, 3)
    cols = ["name", "task", "year", "parameters_m", "size_mb", "imagenet_top1", "source", "available", "description"]
    _emit(rows, fmt, cols, "cnnkit models")


def info(fmt: Annotated[str, typer.Option("--format", "-f", help="auto, table or json.")] = "auto") -> None:
    """Versions, devices, threads, cache folders, bundled models and cached pretrained weights."""
    import os
    import platform
    import sys
    from importlib import metadata

    import torch

    from cnnkit import __version__
    from cnnkit.config import config_path, effective
    from cnnkit.device import available_devices, choose_device
    from cnnkit.models import hub
    from cnnkit.models.describe import is_available
    from cnnkit.models.registry import list_models

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    specs = list_models()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    data = {
        "cnnkit": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "versions": {p: version(p) for p in ("torch", "torchvision", "ultralytics", "segmentation-models-pytorch",
                                              "safetensors", "pillow", "numpy", "typer", "rich")},
        "devices": available_devices(),
        "auto_device": choose_device(None, cuda_count=cuda, mps_available=mps),
        "device_env": os.environ.get("CNNKIT_DEVICE"),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "caches": {"torch_hub": str(hub.torch_hub_dir()), "weights_dir": str(hub.WEIGHTS_DIR)},
        "settings": effective({"batch_size": 16, "workers": 2, "format": "auto", "device": "auto",
                               "model.classify": "shapes-cnn"}),
        "config_file": str(config_path()) if config_path() else None,
        "bundled": [s.name for s in specs if s.source == "bundled" and is_available(s)],
        "cached_pretrained": [s.name for s in specs if s.source != "bundled" and is_available(s)],
    }
    if fmt == "json" or (fmt == "auto" and not sys.stdout.isatty()):
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in data.items()]
    _emit(rows, "table", ["key", "value"], "cnnkit info")


def register(app: typer.Typer) -> None:
    app.command("models", rich_help_panel="Models")(models)
    app.command("info", rich_help_panel="Models")(info)
