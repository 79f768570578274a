"""The one renderer of evaluation reports: every ``val`` command parses its options, calls its task's
``validate`` and hands the metrics here. JSON is the metrics as they are; a table is the task's
:func:`report_tables` layout drawn with rich. ``report_format`` (in :mod:`cnnkit.cli.common`) picks which."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o
from cnnkit.eval.report import ReportTable, run_facts


def render_report(metrics: dict[str, Any], tables: Sequence[ReportTable], fmt: str, width: int = 120) -> str:
    """``metrics`` as indented JSON (``fmt == "json"``) or ``tables`` as plain text for people."""
    if fmt == "json":
        return json.dumps(metrics, indent=2) + "\n"
    import io

    from rich.console import Console
    from rich.table import Table

    from cnnkit.errors import printable

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False)
    for t in tables:
        drawn = Table(title=t.title or None)
        for i, col in enumerate(t.columns):
            drawn.add_column(col, justify="left" if i == 0 else "right")
        for row in t.rows:  # class names come from a dataset's folders or a model's file
            drawn.add_row(*(printable(str(c)) for c in row))
        console.print(drawn)
        for note in t.notes:
            console.print(note, markup=False)
    return buf.getvalue()


def run_val(
    ctx: typer.Context,
    task: str,
    data: str,
    options: dict[str, Any],
    shared: dict[str, Any],
    done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The body every ``val`` command shares: DATA made local, the task's ``validate(data, **options)`` with
    the batch size and workers settings, the report to ``--output`` or stdout in the format ``report_format``
    picks, then ``done(metrics)``; exits 1 when inputs failed. Returns the metrics."""
    from cnnkit.cli import reporting
    from cnnkit.io.files import check_outputs
    from cnnkit.io.writers import check_output
    from cnnkit.tasks import TASKS

    data = c.local_data(ctx, data)
    options = dict(options, batch_size=c.setting(ctx, "batch_size"), workers=c.setting(ctx, "workers"))
    fmt = c.report_format(o.view_format(ctx, shared["fmt"]), shared["output"])
    check_outputs({"`output`": shared["output"], "`report`": shared["report"]}, [data], within=data)
    check_output(shared["output"], fmt, exist_ok=shared["exist_ok"])  # before the run, not after it
    report = reporting.start(shared["report"], shared["exist_ok"], task, data=data)
    row = TASKS[task]
    metrics = row.validator(data, **options, on_record=reporting.truth_hook(report))
    if report is not None:  # the HTML report (--report): the metrics beside each record and its truth
        report.info.update({k: metrics[k] for k in ("model",) if k in metrics} | run_facts(metrics))
        report.set_metrics({k: v for k, v in metrics.items() if k != "ultralytics"})
        reporting.finish(report)
    c.emit_report(render_report(metrics, row.report_tables(metrics), fmt), shared["output"], shared["exist_ok"])
    if done is not None:
        done(metrics)
    c.exit_if_failed(metrics)
    return metrics
