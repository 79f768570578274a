"""``cnnkit models`` and ``cnnkit info``: what this installation knows and has."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cnnkit.cli import options as o
from cnnkit.cli.common import json_wanted


def models(
    ctx: typer.Context,
    task: o.Task = None,
    pattern: Annotated[str, typer.Argument(help="fnmatch filter on names, e.g. 'resnet*'.")] = "*",
    fmt: o.Format = "auto",
) -> None:
    """Every model the registry knows: task, parameters, size, weights source, available now or not."""
    from cnnkit.cli.tables import Column, cell, render
    from cnnkit.models.describe import describe
    from cnnkit.models.registry import list_models

    if task == "track":  # the tracker runs the detectors and instance segmenters
        specs = [s for s in list_models(pattern) if s.task in ("detect", "instance")]
    else:
        specs = list_models(pattern, task=task)
    rows = [describe(s) for s in specs]
    for r in rows:
        r["parameters_m"] = round(r["parameters"] / 1e6, 3)
    if not rows:  # an empty list is the answer (as timm's list_models), said on stderr so no one wonders
        typer.echo(f"no model matches {pattern!r}{f' for {task}' if task else ''} (names are lower case)", err=True)
    if json_wanted(fmt, ctx):
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = [
        Column("name", "name", keep=True),
        Column("ready", "ready", keep=True),
        Column("task", "task"),
        Column("params", "params", right=True),
        Column("source", "from"),
        Column("top1", "ImageNet top-1", right=True),
        Column("mb", "MB", right=True),
        Column("year", "year", right=True),
        Column("description", "description"),
    ]
    if task and task != "track":
        columns = [c for c in columns if c.key != "task"]
    text = [
        {
            "name": r["name"],
            "task": r["task"],
            "params": f"{r['parameters_m']:.1f}M",
            "source": r["source"],
            "ready": cell(r["available"]),
            "top1": cell(r.get("imagenet_top1")),
            "mb": cell(r.get("size_mb")),
            "year": cell(r.get("year")),
            "description": r.get("description", ""),
        }
        for r in rows
    ]
    typer.echo(
        render(
            columns,
            text,
            caption="ready: usable now, offline. Weights from torchvision and ultralytics "
            "download once on first use, then come from the cache.",
        ),
        nl=False,
    )


def info(ctx: typer.Context, fmt: o.Format = "auto") -> None:
    """Versions, devices, threads, cache folders, bundled models and cached pretrained weights."""
    import os
    import platform
    from importlib import metadata

    import torch

    from cnnkit import __version__, runtimes
    from cnnkit.config import config_path, effective
    from cnnkit.device import available_devices, choose_device
    from cnnkit.models import hub
    from cnnkit.models.describe import is_available
    from cnnkit.models.registry import list_models
    from cnnkit.tasks import TASKS
    from cnnkit.ultralytics_adapter import cache_dir

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    specs = list_models()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    data = {
        "cnnkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: version(p)
            for p in (
                "torch",
                "torchvision",
                "ultralytics",
                "segmentation-models-pytorch",
                "safetensors",
                "pillow",
                "numpy",
                "typer",
                "rich",
                "onnxruntime",
                "openvino",
                "simplejpeg",
            )
        },
        "devices": available_devices(),
        "auto_device": choose_device("auto", cuda_count=cuda, mps_available=mps),  # what auto picks here
        "device_env": os.environ.get("CNNKIT_DEVICE"),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "caches": {
            "cnnkit": str(cache_dir()),
            "ultralytics_weights": str(cache_dir() / "ultralytics" / "weights"),
            "torch_hub": str(hub.torch_hub_dir()),
            "weights_dir": str(hub.WEIGHTS_DIR),
            "runtimes": str(runtimes.cache_root()),
            "openvino": str(runtimes.openvino_cache()),
        },
        "settings": effective(
            {
                "batch_size": 16,
                "workers": 2,
                "format": "auto",
                "device": "auto",
                "backend": "auto",
                **{f"model.{name}": row.default_model for name, row in TASKS.items()},
            }
        ),
        "config_file": str(config_path()) if config_path() else None,
        "bundled": [s.name for s in specs if s.source == "bundled" and is_available(s)],
        "cached_pretrained": [s.name for s in specs if s.source != "bundled" and is_available(s)],
    }
    if json_wanted(fmt, ctx):
        typer.echo(json.dumps(data, indent=2))
        return
    from cnnkit.cli.tables import Column, cell, render

    rows = [{"key": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else cell(v)} for k, v in data.items()]
    typer.echo(render([Column("key", "setting", keep=True), Column("value", "value", keep=True)], rows), nl=False)


def register(app: typer.Typer) -> None:
    """Adds ``models`` and ``info`` to the root app."""
    app.command("models", rich_help_panel="Models")(models)
    app.command("info", rich_help_panel="Models")(info)
