"""``cnnkit benchmark``: images per second, latency and memory per model × backend, on this machine."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Annotated, Optional

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

FORMATS = ("auto", "table", "json", "jsonl", "csv")


def benchmark(
    ctx: typer.Context,
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Registry names or model files \\[default: the classify, detect and segment bundled models].",
            show_default=False,
        ),
    ] = None,
    backend: o.Backends = None,
    imgsz: o.Imgsz = None,
    data: o.BenchData = None,
    images: o.BenchImages = 64,
    batch_size: o.BatchSize = 16,
    device: o.Device = None,
    threads: o.Threads = None,
    half: o.Half = False,
    seconds: o.Seconds = 2.0,
    task: o.Task = None,
    fmt: o.Format = "auto",
    output: o.Output = None,
    exist_ok: o.ExistOk = False,
) -> None:
    """Time models per backend: img/s end to end and forward only, latency, peak memory, load time, metric.

    Per model and backend: end-to-end img/s (decode included), forward-only img/s, decode and model ms per
    image, p50/p95 latency at batch 1, peak memory, the load time (with the compile on a cold cache) and the
    metric on --data.

    Repeat --backend to compare \\[default: torch and auto, or torch and $CNNKIT_BACKEND]; --half times fp16 (CUDA only). Measured, never
    judged: figures depend on the machine and its load. Prints a table on a terminal and JSON elsewhere (or -f
    jsonl/csv).
    """
    from cnnkit.benchmark import COLUMNS, run
    from cnnkit.cli.options import view_format
    from cnnkit.config import lookup
    from cnnkit.errors import UsageError
    from cnnkit.tasks import TASKS

    fmt = view_format(ctx, fmt, FORMATS)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected {', '.join(FORMATS)}")
    names = models or [TASKS[t].default_model for t in ("classify", "detect", "segment")]
    from cnnkit.io.files import check_outputs
    from cnnkit.io.writers import check_output

    check_outputs({"`output`": output}, [*names, *([data] if data else [])])  # before minutes of timing
    if fmt == "auto":
        fmt = "table" if output is None and sys.stdout.isatty() else "json"
    check_output(output, fmt, exist_ok=exist_ok)  # an existing file is refused before minutes of timing
    quiet = bool((ctx.find_root().obj or {}).get("quiet"))

    def progress(what: str) -> None:
        if not quiet:
            typer.echo(f"benchmark: {what}", err=True)

    errors: list[tuple[str, str, str]] = []
    rows = [
        r.to_dict()
        for r in run(
            names,
            backends=backend or list(dict.fromkeys(["torch", str(lookup("backend", "auto").value)])),
            imgsz=imgsz,
            data=data,
            images=images,
            batch_size=batch_size or 16,
            threads=threads,
            device=device,
            seconds=seconds,
            task=task,
            half=half,
            progress=progress,
            errors=errors,
        )
    ]
    c.emit_report(render(rows, fmt, COLUMNS), output, exist_ok)
    if errors:  # the rows measured are written; what could not be timed is said, and the exit code is 1
        typer.echo(f"{len(errors)} model/backend pair(s) not timed:", err=True)
        flags = c.flag_names(ctx.find_root().command)
        for name, runtime, reason in errors:
            typer.echo(f"  {name} on {runtime}: {c.spell_options(reason, flags)}", err=True)
        raise typer.Exit(c.EXIT_FAILED)


def render(rows: list[dict], fmt: str, columns: tuple[str, ...]) -> str:
    """The rows as a table, JSON (one list), JSON Lines or CSV."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    from cnnkit.cli.tables import Column, cell
    from cnnkit.cli.tables import render as table

    shown = [c for c in columns if c not in ("task", "imgsz", "batch_size", "threads")]  # one run's settings
    shown.insert(shown.index("runtime") + 1, shown.pop(shown.index("cache")))  # beside the runtime it is about
    cols = [
        Column(k, k, right=k not in ("model", "backend", "runtime", "cache", "metric"), keep=k in ("model", "backend"))
        for k in shown
    ]
    return table(
        cols,
        [{k: cell(r.get(k)) for k in shown} for r in rows],
        caption="img/s: images per second; e2e includes decoding; ms: median per image at batch 1; "
        "load_s includes the compile when cache is 'built'.",
    )


def register(app: typer.Typer) -> None:
    """Add the command to the root app (one line in :mod:`cnnkit.cli`)."""
    app.command("benchmark", rich_help_panel="Models")(benchmark)
