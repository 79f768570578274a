"""``cnnkit segment val``: figures checked against segmentation_models_pytorch.metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli import app

runner = CliRunner()


def _smp_figures(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> dict:
    import torch
    from segmentation_models_pytorch import metrics

    tp, fp, fn, tn = metrics.get_stats(
        torch.from_numpy(np.stack(preds)).long(),
        torch.from_numpy(np.stack(targets)).long(),
        mode="multiclass",
        num_classes=num_classes,
    )
    tp, fp, fn, tn = (t.sum(0, keepdim=True) for t in (tp, fp, fn, tn))
    iou = metrics.iou_score(tp, fp, fn, tn, reduction=None)[0]
    present = (tp + fp + fn)[0] > 0
    return {
        "iou": iou,
        "present": present,
        "miou": float(iou[present].mean()),
        "pixel_accuracy": float(metrics.recall(tp, fp, fn, tn, reduction="micro")),
    }


def test_val_matches_smp_metrics_on_the_same_predictions(masks_data, tiny_checkpoint):
    from cnnkit import api
    from cnnkit.data.masks import find_pairs, read_mask

    res = runner.invoke(
        app,
        ["segment", "val", str(masks_data), "--split", "train", "--weights", str(tiny_checkpoint), "--format", "json"],
    )
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    pairs = find_pairs(masks_data, "train")
    assert scores["images"] == len(pairs)
    seg = api.load("segment", weights=str(tiny_checkpoint))
    preds = [m for _, m in seg.masks([str(i) for i, _ in pairs])]
    ref = _smp_figures(preds, [read_mask(m) for _, m in pairs], len(seg.labels))
    assert abs(scores["miou"] - ref["miou"]) < 1e-6
    assert abs(scores["pixel_accuracy"] - ref["pixel_accuracy"]) < 1e-6
    for (name, iou), ref_iou, present in zip(scores["per_class_iou"].items(), ref["iou"], ref["present"]):
        assert (iou is None) == (not bool(present)), name
        if iou is not None:
            assert abs(iou - float(ref_iou)) < 1e-6


def test_confusion_matrix_on_a_known_case():
    from cnnkit.tasks.segment.val import ConfusionMatrix

    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [2, 1]]))
    s = cm.scores(["a", "b", "c"])
    assert s["per_class_iou"] == {"a": 1.0, "b": 2 / 3, "c": 0.0}
    assert abs(s["miou"] - (1 + 2 / 3) / 3) < 1e-12 and s["pixel_accuracy"] == 0.75


def test_val_table_and_output_file(masks_data, tiny_checkpoint, tmp_path):
    out = tmp_path / "scores.txt"
    res = runner.invoke(
        app, ["segment", "val", str(masks_data / "val"), "--weights", str(tiny_checkpoint), "--output", str(out)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "mIoU" in text and "hexagon" in text


def test_val_on_a_folder_without_masks_fails_with_the_reason(tmp_path, tiny_checkpoint):
    (tmp_path / "images").mkdir()
    from cnnkit.errors import CnnkitError

    res = runner.invoke(app, ["segment", "val", str(tmp_path), "--weights", str(tiny_checkpoint)])
    assert res.exit_code == 1
    assert "masks/" in res.output + str(isinstance(res.exception, CnnkitError) and res.exception)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_class_map_is_argmax_ties_included(layout):
    import torch

    from cnnkit.tasks.segment.val import class_map

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (2, 6, 33, 47), generator=g).float()  # few values: many ties
    if layout == "channels_last":
        scores = scores.contiguous(memory_format=torch.channels_last)
    assert torch.equal(class_map(scores, 1), scores.argmax(1))
    assert torch.equal(class_map(scores[0]), scores[0].argmax(0))


def test_val_matches_the_dataset_classes_to_the_model_by_name(tmp_path):
    """A dataset whose classes.txt orders the classes otherwise (its masks renumbered to match) means the same
    thing and scores the same; a classes.txt naming what the model lacks leaves those pixels out, with a word."""
    import shutil

    import numpy as np
    from PIL import Image

    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.segment.val import validate

    first = tmp_path / "first"
    export_shapes(first, "masks", 8, seed=9, imgsz=64, val_fraction=0.5)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    (second / "cnnkit-data.json").unlink()
    (second / "classes.txt").write_text("background\nstar\nsquare\ntriangle\ncircle\nhexagon\n")
    for mask in (second / "val" / "masks").glob("*.png"):
        value = np.asarray(Image.open(mask)).copy()
        swapped = value.copy()
        swapped[value == 1], swapped[value == 4] = 4, 1  # circle ↔ star
        Image.fromarray(swapped).save(mask)
    a, b = validate(str(first)), validate(str(second))
    assert a["images"] == b["images"] > 0
    assert b["miou"] == pytest.approx(a["miou"]) and b["per_class_iou"] == pytest.approx(a["per_class_iou"])
    (second / "classes.txt").write_text("background\nstar\nsquare\ntriangle\ncircle\nzebra\n")
    assert validate(str(second))["images"] == a["images"]
