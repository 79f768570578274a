"""The one report renderer: every task's ``report_tables`` drawn by ``cli.report.render_report``."""

from __future__ import annotations

import json

import pytest

from cnnkit.cli.report import render_report
from cnnkit.tasks import TASKS

METRICS = {
    "classify": {
        "model": "m",
        "data": "d",
        "images": 4,
        "top1": 0.75,
        "top5": 1.0,
        "failed": [],
        "macro": {"precision": 0.5, "recall": 0.5, "f1": 0.5},
        "per_class": [
            {"label": "cat", "precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2},
            {"label": "dog", "precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
        ],
        "confusion": {"labels": ["cat", "dog"], "columns": ["cat", "dog"], "matrix": [[1, 1], [0, 2]]},
    },
    "detect": {
        "model": "m",
        "data": "d.yaml",
        "split": "val",
        "images": 2,
        "failed": 1,
        "instances": 3,
        "imgsz": 64,
        "mAP50": 0.5,
        "mAP50-95": 0.25,
        "precision": 0.6,
        "recall": 0.4,
        "per_class": {"star": {"instances": 3, "precision": 0.6, "recall": 0.4, "mAP50": 0.5, "mAP50-95": 0.25}},
    },
    "segment": {
        "model": "m",
        "data": "d",
        "images": 2,
        "miou": 0.5,
        "pixel_accuracy": 0.9,
        "pixels": 10,
        "per_class_iou": {"background": 0.9, "star": 0.1, "circle": None},
    },
    "instance": {
        "model": "m",
        "data": "d/annotations.json",
        "images": 2,
        "failed": [],
        "bbox": {"AP": 0.5, "AP50": 0.7, "AP75": 0.4, "per_class": {}},
        "segm": {"AP": 0.4, "AP50": 0.6, "AP75": 0.3, "per_class": {}},
    },
}
SHOWN = {
    "classify": ["per class", "confusion matrix", "dog", "0.7500"],
    "detect": ["mAP50-95", "star", "0.250", "1 image(s) could not be read"],
    "segment": ["star", "0.1000", "mIoU 0.5000", "circle"],
    "instance": ["bbox", "segm", "AP75", "0.6000"],
}


@pytest.mark.parametrize("task", sorted(METRICS))  # the four tasks with a report_tables layout
def test_every_task_reports_through_the_one_renderer(task):
    metrics = METRICS[task]
    text = render_report(metrics, TASKS[task].report_tables(metrics), "table")
    for words in SHOWN[task]:
        assert words in text, (task, words)
    assert json.loads(render_report(metrics, TASKS[task].report_tables(metrics), "json")) == metrics


def test_macro_averages_are_of_the_unrounded_figures():
    import numpy as np

    from cnnkit.tasks.classify.val import per_class_report, summary

    cm = np.random.default_rng(0).integers(0, 50, (5, 5))
    raw = per_class_report(cm, list("abcde"), digits=None)
    assert summary(cm, list("abcde"))["macro"]["f1"] == round(float(np.mean([r["f1"] for r in raw])), 4)


def test_tracking_scores_with_nothing_matched_are_null_not_nan():
    import json

    from cnnkit.eval.mot import MotRow, score

    scores = score({"s": ([MotRow(1, 1, (0.0, 0.0, 10.0, 10.0))], [MotRow(1, 2, (50.0, 50.0, 10.0, 10.0), 0.9)])})
    assert scores["s"]["motp"] is None
    json.loads(json.dumps(scores, allow_nan=False))


def test_a_val_report_named_like_a_table_of_rows_is_refused(tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    result = CliRunner().invoke(app, ["classify", "val", str(tmp_path), "-o", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "a report is JSON or a table" in result.stderr
