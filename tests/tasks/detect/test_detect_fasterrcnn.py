"""Faster R-CNN through ``cnnkit detect``: random weights end to end, COCO names, offline error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import validate_record
from tests.fixtures.detect import cross_class_overlap, error_text

runner = CliRunner()
ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A random-weights Faster R-CNN for the 5 shapes, as a cnnkit checkpoint (and as a plain state dict)."""
    import torch

    from cnnkit.data.shapes import CLASSES
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.registry import get_spec

    torch.manual_seed(0)
    model = get_spec(ARCH).builder(num_classes=len(CLASSES))
    folder = tmp_path_factory.mktemp("frcnn")
    ckpt = save_checkpoint(
        folder / "frcnn.safetensors",
        model,
        {"task": "detect", "arch": ARCH, "labels": list(CLASSES), "name": "frcnn-random"},
    )
    torch.save(model.state_dict(), folder / "frcnn.pth")
    return ckpt, folder / "frcnn.pth"


def test_faster_rcnn_random_weights_end_to_end(random_checkpoint, scenes, tmp_path):
    ckpt, _ = random_checkpoint
    folder, _ = scenes
    base = ["detect", str(folder), "--weights", str(ckpt), "--conf", "0.0", "--max-det", "5", "--imgsz", "256"]
    result = runner.invoke(
        app, [*base, "--format", "jsonl", "--save-dir", str(tmp_path / "pics"), "--save-txt"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4
    for rec in records:
        validate_record(rec)
        assert rec["model"] == "frcnn-random" and len(rec["predictions"]) <= 5
        assert (tmp_path / "pics" / rec["saved"].split("/")[-1]).is_file()
        for p in rec["predictions"]:
            assert set(p) == {"label", "class_id", "score", "box"}
            assert p["label"] in ("circle", "square", "triangle", "star", "hexagon")
            assert 0 <= p["box"][0] <= p["box"][2] <= 256
    coco = tmp_path / "coco.json"
    result = runner.invoke(app, [*base, "--format", "coco", "--output", str(coco)], catch_exceptions=False)
    assert result.exit_code == 0
    assert isinstance(json.loads(coco.read_text()), list)


def test_faster_rcnn_agnostic_nms_across_classes(random_checkpoint, scenes):
    ckpt, _ = random_checkpoint
    folder, _ = scenes
    base = ["detect", str(folder), "--weights", str(ckpt), "--conf", "0.0", "--iou", "0.5", "--format", "jsonl"]

    def records(*extra: str) -> list[dict]:
        result = runner.invoke(app, [*base, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert cross_class_overlap(records()) > 0.5  # the heads suppress within each class only
    assert cross_class_overlap(records("--agnostic-nms")) <= 0.5 + 1e-6


def test_faster_rcnn_val_metrics(random_checkpoint, yolo_set):
    ckpt, _ = random_checkpoint
    result = runner.invoke(
        app,
        [
            "detect",
            "val",
            str(yolo_set),
            "--weights",
            str(ckpt),
            "--format",
            "json",
            "--imgsz",
            "256",
            "--max-det",
            "20",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["model"] == "frcnn-random" and m["images"] == 30 and "ultralytics" not in m
    assert 0.0 <= m["mAP50"] <= 1.0 and set(m["per_class"]) == {"circle", "square", "triangle", "star", "hexagon"}


def test_faster_rcnn_state_dict_with_model(random_checkpoint, scenes):
    import cnnkit

    _, state = random_checkpoint
    folder, _ = scenes
    recs = cnnkit.detect(str(folder / "scene_0.png"), model=ARCH, weights=str(state), conf=0.0, max_det=3, imgsz=256)
    assert recs[0].ok and recs[0].model == ARCH
    assert all(p["label"].startswith("class_") for p in recs[0].predictions)


def test_faster_rcnn_coco_weights_give_coco_names(monkeypatch, scenes):
    """With torchvision's COCO weights (here: a stand-in state dict served by the download function)."""
    import cnnkit
    from cnnkit.models import hub
    from cnnkit.models.registry import get_spec

    state = get_spec(ARCH).builder().state_dict()
    monkeypatch.setattr(hub, "torchvision_state_dict", lambda name, enum, progress=False: state)
    folder, _ = scenes
    predictor = cnnkit.load("detect", model=ARCH, conf=0.0, max_det=2)
    assert predictor.labels[0] == "person" and len(predictor.labels) == 90
    rec = predictor(str(folder / "scene_1.png"))[0]
    assert rec.ok and all(p["label"] == predictor.labels[p["class_id"]] for p in rec.predictions)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn_v2", ARCH])
def test_faster_rcnn_offline_without_cache_is_a_clear_error(name, scenes):
    folder, _ = scenes
    result = runner.invoke(app, ["detect", str(folder / "scene_0.png"), "--model", name])
    assert result.exit_code == 1
    text = error_text(result)
    assert name in text and "not in the cache" in text and "--weights" in text


def test_faster_rcnn_results_do_not_depend_on_the_batch_size_with_mixed_image_sizes(random_checkpoint, tmp_path):
    import cnnkit
    from tests.tasks.instance.test_instance import _mixed_sizes

    ckpt, _ = random_checkpoint
    paths = _mixed_sizes(tmp_path)
    one = [r.to_dict()["predictions"] for r in cnnkit.detect(paths, weights=str(ckpt), conf=0.0, batch_size=1)]
    four = [r.to_dict()["predictions"] for r in cnnkit.detect(paths, weights=str(ckpt), conf=0.0, batch_size=4)]
    assert any(one)
    assert one == four


def test_faster_rcnn_classes_with_max_det_keep_the_best_of_those_classes(random_checkpoint, scenes):
    import cnnkit

    ckpt, _ = random_checkpoint
    folder, _ = scenes
    image = str(sorted(folder.glob("*.png"))[0])
    every = cnnkit.detect(image, weights=str(ckpt), conf=0.0, max_det=300)[0].predictions
    counts = {c: sum(p["class_id"] == c for p in every) for c in {p["class_id"] for p in every}}
    rare = min(counts, key=counts.get)
    kept = cnnkit.detect(image, weights=str(ckpt), conf=0.0, classes=[rare], max_det=2)[0].predictions
    mine = sorted((p["score"] for p in every if p["class_id"] == rare), reverse=True)
    assert [p["class_id"] for p in kept] == [rare] * min(2, len(mine))
    assert [p["score"] for p in kept] == mine[:2]


def test_faster_rcnn_keeps_its_own_nms_iou_unless_one_is_given(random_checkpoint, scenes):
    """torchvision's detectors suppress at IoU 0.5; ultralytics' 0.7 is YOLO's default only (it gave Faster
    R-CNN about twice torchvision's boxes)."""
    import cnnkit

    ckpt, _ = random_checkpoint
    folder, _ = scenes
    image = str(sorted(folder.glob("*.png"))[0])

    def boxes(**options):
        return cnnkit.detect(image, weights=str(ckpt), conf=0.0, max_det=1000, **options)[0].predictions

    default = boxes()
    assert default == boxes(iou=0.5) and len(boxes(iou=0.9)) > len(default) > 0
