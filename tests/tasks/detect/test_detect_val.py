"""``cnnkit detect val``: COCO-way metrics from records, checked by hand and against ultralytics."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import Record
from tests.fixtures.detect import error_text, is_usage_error

runner = CliRunner()


@pytest.fixture()
def hand_case(tmp_path):
    """One 100×100 image with two squares; predictions: one perfect box, one false positive, one miss."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    path = images / "a.png"
    # ground truth: A = [10, 10, 30, 30], B = [60, 60, 90, 90], both class 0
    (labels / "a.txt").write_text("0 0.2 0.2 0.2 0.2\n0 0.75 0.75 0.3 0.3\n")
    record = Record(
        str(path),
        "detect",
        "hand",
        100,
        100,
        predictions=[
            {"label": "square", "class_id": 0, "score": 0.9, "box": [10.0, 10.0, 30.0, 30.0]},  # A, perfect
            {"label": "square", "class_id": 0, "score": 0.8, "box": [40.0, 0.0, 55.0, 15.0]},  # false positive
        ],
    )  # B is missed
    return record


def test_hand_worked_ap(hand_case):
    """Ranked: TP (0.9), FP (0.8); 2 ground-truth boxes.

    Precision is 1 up to recall 0.5 and recall never exceeds 0.5, so COCO's 101-point
    interpolated AP is 51/101 at every IoU threshold (the perfect box has IoU 1): mAP50 =
    mAP50-95 = 51/101. The operating point is ultralytics': R = 0.5, and P from the smoothed F1 curve,
    between the TP alone (P = 1) and both (P = 0.5).
    """
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.tasks.detect.val import ground_truth

    gt = ground_truth([hand_case], ["square"])
    boxes = [v for a in gt["annotations"] for v in a["bbox"]]
    assert boxes == pytest.approx([10, 10, 20, 20, 60, 60, 30, 30])
    coco = CocoResults({hand_case.path: 1})
    coco.add(hand_case)
    m = evaluate(gt, coco.results(), "bbox")
    assert m["AP50"] == pytest.approx(51 / 101)
    assert m["AP"] == pytest.approx(51 / 101)
    assert 0.5 < m["precision"] < 1.0 and m["recall"] == pytest.approx(0.5)
    assert m["per_class"]["square"]["precision"] == pytest.approx(m["precision"])


def test_precision_and_recall_are_ultralytics_operating_point():
    """Boxes that either sit on a ground-truth box or far from all, so COCO's matches are known; precision and
    recall then equal ultralytics' ``ap_per_class`` on the same matches."""
    import numpy as np

    from cnnkit import ultralytics_adapter
    from cnnkit.eval.coco import evaluate

    rng = np.random.default_rng(7)
    images, annotations, results, tp, conf, pred_cls, target_cls = [], [], [], [], [], [], []
    for image_id in range(1, 21):
        images.append({"id": image_id, "width": 200, "height": 200, "file_name": f"{image_id}.png"})
        for k in range(3):
            cls = int(rng.integers(0, 3))
            box = [10.0 + 60 * k, 20.0, 40.0, 40.0]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1, "bbox": box})
            target_cls.append(cls)
            if rng.random() < 0.7:  # found, at a random score
                score = float(rng.uniform(0.2, 1.0))
                results.append({"image_id": image_id, "category_id": cls + 1, "bbox": box, "score": score})
                tp.append(True), conf.append(score), pred_cls.append(cls)
        for _ in range(int(rng.integers(0, 3))):  # false positives far below every object
            cls, score = int(rng.integers(0, 3)), float(rng.uniform(0.0, 0.9))
            results.append(
                {"image_id": image_id, "category_id": cls + 1, "bbox": [10.0, 150.0, 30, 30], "score": score}
            )
            tp.append(False), conf.append(score), pred_cls.append(cls)
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(3)],
    }
    m = evaluate(gt, results, "bbox")
    ultralytics_adapter.ultralytics()
    from ultralytics.utils.metrics import ap_per_class

    _, _, p, r, *_ = ap_per_class(np.array(tp)[:, None], np.array(conf), np.array(pred_cls), np.array(target_cls))
    assert m["precision"] == pytest.approx(p.mean(), abs=1e-3) and m["recall"] == pytest.approx(r.mean(), abs=1e-3)
    assert [m["per_class"][f"c{i}"]["recall"] for i in range(3)] == pytest.approx(list(r), abs=1e-3)


def test_category_map_by_name_then_by_id():
    from cnnkit.tasks.detect.val import category_map

    assert category_map(["b", "a", "zebra"], ["a", "b"]) == {0: 2, 1: 1}
    assert category_map(["class_0", "class_1"], ["a", "b", "c"]) == {0: 1, 1: 2}


@pytest.fixture(scope="module")
def bundled_metrics(yolo_set):
    from cnnkit.tasks.detect.val import validate

    return validate(yolo_set, batch_size=8)


def test_bundled_map50_on_unseen_scenes(bundled_metrics):
    """The shipped detector on 30 scenes from a seed it was never trained on."""
    assert bundled_metrics["images"] == 30
    assert bundled_metrics["mAP50"] >= 0.90
    assert 0 < bundled_metrics["mAP50-95"] <= bundled_metrics["mAP50"]


def test_cnnkit_and_ultralytics_val_agree(bundled_metrics):
    ul = bundled_metrics["ultralytics"]
    assert abs(bundled_metrics["mAP50"] - ul["mAP50"]) <= 0.02
    assert abs(bundled_metrics["mAP50-95"] - ul["mAP50-95"]) <= 0.02


def test_val_cli_json_and_table(yolo_set, tmp_path):
    out = tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "detect",
            "val",
            str(yolo_set),
            "--no-compare",
            "--format",
            "json",
            "--output",
            str(out),
            "--imgsz",
            "256",
            "--conf",
            "0.001",
            "--iou",
            "0.7",
            "--max-det",
            "100",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert "ultralytics" not in m and m["imgsz"] == 256
    assert set(m["per_class"]) == {"circle", "square", "triangle", "star", "hexagon"}
    for row in m["per_class"].values():
        assert {"instances", "precision", "recall", "mAP50", "mAP50-95"} <= set(row)
    assert sum(row["instances"] for row in m["per_class"].values()) == m["instances"]
    again = runner.invoke(app, ["detect", "val", str(yolo_set), "--no-compare", "--output", str(out)])
    assert again.exit_code == 1
    table = runner.invoke(
        app, ["detect", "val", str(yolo_set), "--no-compare", "--split", "val"], catch_exceptions=False
    )
    assert table.exit_code == 0 and "mAP50-95" in table.stdout and "hexagon" in table.stdout


def test_val_missing_yaml_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["detect", "val", str(tmp_path / "nope.yaml")])
    assert is_usage_error(result) and "nope.yaml" in error_text(result)


def test_no_ground_truth_objects_give_zero_not_pycocotools_minus_one():
    from cnnkit.eval.coco import evaluate

    gt = {"images": [{"id": 1, "width": 50, "height": 50}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    m = evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9}], "bbox")
    assert m["AP"] == m["AP50"] == m["AP75"] == 0.0


def test_ap_counts_as_many_detections_an_image_as_the_detector_keeps() -> None:
    """pycocotools counts 100 detections an image unless told: an image of 150 objects found exactly scored AP
    0.66 (ultralytics, beside it, 1.0), so crowded datasets were under-reported."""
    from cnnkit.eval.coco import evaluate

    boxes = [[(i % 15) * 20.0, (i // 15) * 20.0, 10.0, 10.0] for i in range(150)]
    gt = {
        "images": [{"id": 1, "width": 320, "height": 320, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "square"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": b} for b in boxes],
    }
    found = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9 - i * 1e-4} for i, b in enumerate(boxes)]
    assert evaluate(gt, found, max_det=300)["AP"] == pytest.approx(1.0)
    assert evaluate(gt, found)["AP"] < 0.7  # pycocotools' own 100, as COCO's leaderboard counts


@pytest.fixture(scope="module")
def small_yolo_set(tmp_path_factory):
    """Eight val scenes (seed 4242) in YOLO layout: returns its folder, whose data.yaml each test rewrites."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("small_yolo")
    export_shapes(out, "yolo", n=10, seed=4242, imgsz=256, val_fraction=0.8)
    (out / "cnnkit-data.json").unlink(missing_ok=True)
    return out


def _names_yaml(root, names: list[str]) -> str:
    lines = "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{lines}")
    return str(root / "data.yaml")


def test_a_report_sees_predictions_under_the_dataset_names(small_yolo_set):
    """Classes matched by position (the dataset names a…e): the records a report gets carry the dataset's names,
    as their truth does; they carried the model's (circle…), so the report's PR curves gave every class AP 0."""
    from cnnkit.report.evidence import pr_curves
    from cnnkit.tasks.detect.val import validate

    seen = []
    m = validate(
        _names_yaml(small_yolo_set, list("abcde")),
        compare=False,
        on_record=lambda r, truth: seen.append((r.predictions, truth)),
    )
    assert m["mAP50"] > 0.8
    labels = {p["label"] for preds, _ in seen for p in preds}
    assert labels and labels <= set("abcde")
    curves = pr_curves(seen)
    assert {c["label"] for c in curves} <= set("abcde") and min(c["ap"] for c in curves) > 0.5


def test_ultralytics_val_is_left_out_when_it_would_pair_other_classes(small_yolo_set, caplog):
    """Dataset names in another order than the model's: cnnkit pairs them by name, ultralytics by id, so its
    figures (0.33 against cnnkit's 1.0) were printed beside them as the same measure. They are left out, said."""
    from cnnkit.tasks.detect.val import validate

    order = ["hexagon", "star", "triangle", "square", "circle"]  # the model's, reversed
    for f in (small_yolo_set / "labels").rglob("*.txt"):
        f.write_text("".join(f"{4 - int(r.split()[0])} {r.split(' ', 1)[1]}\n" for r in f.read_text().splitlines()))
    try:
        with caplog.at_level("WARNING", logger="cnnkit"):
            m = validate(_names_yaml(small_yolo_set, order))
    finally:
        for f in (small_yolo_set / "labels").rglob("*.txt"):
            rows = f.read_text().splitlines()
            f.write_text("".join(f"{4 - int(r.split()[0])} {r.split(' ', 1)[1]}\n" for r in rows))
    assert m["mAP50"] > 0.8 and "ultralytics" not in m
    assert "another order" in caplog.text


def test_ultralytics_per_class_figures_carry_the_dataset_names(small_yolo_set):
    """Classes matched by position: ultralytics' class i is the dataset's class i, and its row is the dataset's."""
    from cnnkit.tasks.detect.val import validate

    m = validate(_names_yaml(small_yolo_set, list("abcde")))
    per_class = m["ultralytics"]["per_class_mAP50"]
    assert set(per_class) <= set("abcde") and len(per_class) >= 3
    assert all(abs(per_class[n] - m["per_class"][n]["mAP50"]) < 0.1 for n in per_class)


def test_a_folder_given_for_the_yaml_names_the_yaml_inside_or_says_there_is_none(small_yolo_set, tmp_path):
    """ "a folder; pass the dataset yaml inside it" was said of folders that hold none."""
    _names_yaml(small_yolo_set, ["circle", "square", "triangle", "star", "hexagon"])
    result = runner.invoke(app, ["detect", "val", str(small_yolo_set)])
    assert result.exit_code == 2 and "pass the dataset yaml inside it (data.yaml)" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["detect", "val", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "a folder with no dataset yaml" in result.stderr
