"""``cnnkit classify``: top-k labels per image."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o

app = c.task_app("Classify images: top-k labels per image. `cnnkit classify SOURCES...` runs [bold]predict[/bold].")


@app.command("predict")
@o.compose(o.MODEL, o.BACKEND, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, o.ENGINE, batch_size=16)
def predict(ctx: typer.Context, sources: o.Sources = None, topk: o.TopK = 5, **shared: Any) -> None:
    """Top-k labels for each image, from the bundled model, any registry model, or a finetune checkpoint."""
    load = {k: shared[k] for k in ("model", "weights", "backend", "device", "half", "threads")}
    c.run_predict(ctx, "classify", dict(load, topk=topk))


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
    is scored when DATA has train/ and val/, else DATA itself.
    """
    data = c.local_data(ctx, data)
    import json
    from pathlib import Path

    from cnnkit import api
    from cnnkit.io.files import atomic_write_text, explicit_dir, increment_dir
    from cnnkit.tasks.classify.val import evaluate_folder

    output, exist_ok = shared["output"], shared["exist_ok"]
    if o.given(ctx, "split"):
        from cnnkit.errors import UsageError

        if not (Path(data) / shared["split"]).is_dir():
            raise UsageError(f"--split {shared['split']}: {data} has no {shared['split']}/ folder")
        data = str(Path(data) / shared["split"])
    fmt = c.report_format(o.view_format(ctx, shared["fmt"]), output)
    predictor = api.load("classify", **{k: shared[k] for k in ("model", "weights", "backend", "device", "threads")},
                         topk=5)
    from cnnkit.cli import reporting

    report = reporting.start(shared["report"], exist_ok, "classify", data=data)
    reporting.describe(report, predictor)
    folder = explicit_dir(save_dir, exist_ok=exist_ok) if save_dir else increment_dir(Path("runs/classify/val"))
    result = evaluate_folder(predictor, data, batch_size=c.setting(ctx, "batch_size"),
                             workers=c.setting(ctx, "workers"),
                             plot=folder / "confusion_matrix.png", on_record=reporting.truth_hook(report))
    if report is not None:
        report.set_metrics(result)
        reporting.finish(report)
    text = json.dumps(result, indent=2) + "\n"
    atomic_write_text(folder / "metrics.json", text)
    c.emit_report(text if fmt == "json" else _val_tables(result), output, exist_ok)
    if not c.state(ctx)["quiet"]:
        typer.echo(f"{result['images']} image(s) scored, {len(result['failed'])} failed; "
                   f"top-1 {result['top1']:.4f} top-5 {result['top5']:.4f}; wrote {folder}", err=True)
        for item in result["failed"][:10]:
            typer.echo(f"  failed {item['path']}: {item['error']}", err=True)
    if result["failed"]:
        raise typer.Exit(c.EXIT_FAILED)


def _val_tables(result: dict) -> str:
    """The summary, per-class and confusion tables as plain text."""
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=False, color_system=None)
    head = Table(title=f"{result['model']} on {result['data']}")
    for col in ("images", "top-1", "top-5", "macro precision", "macro recall", "macro F1"):
        head.add_column(col, justify="right")
    m = result["macro"]
    head.add_row(str(result["images"]), f"{result['top1']:.4f}", f"{result['top5']:.4f}",
                 f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}")
    per = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="right")
    for r in result["per_class"]:
        per.add_row(r["label"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", str(r["support"]))
    conf = Table(title="confusion matrix (rows true, columns predicted)")
    conf.add_column("true \\ pred")
    for col in result["confusion"]["columns"]:
        conf.add_column(col, justify="right")
    for label, row in zip(result["confusion"]["labels"], result["confusion"]["matrix"]):
        conf.add_row(label, *(str(v) for v in row))
    for table in (head, per, conf):
        console.print(table)
    return buf.getvalue()
