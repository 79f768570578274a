"""``cnnkit instance``: predictor, API, CLI options, COCO output, val, registry and offline behaviour."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.data.shapes import CLASSES
from cnnkit.errors import CnnkitError
from cnnkit.records import validate_record

runner = CliRunner()
PRED_KEYS = {"label", "class_id", "score", "box", "mask"}


def _cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_api_instance_records(tiny_ckpt, scene_folder):
    import cnnkit
    from cnnkit.tasks.instance.post import decode_rle

    records = cnnkit.instance(str(scene_folder), weights=str(tiny_ckpt), conf=0.0, max_det=3, batch_size=2)
    assert [r.path.rsplit("/", 1)[-1] for r in records] == ["scene_0.png", "scene_1.png", "scene_2.png"]
    assert any(r.predictions for r in records)
    for r in records:
        validate_record(r.to_dict())
        assert r.task == "instance" and r.model == "tiny-maskrcnn" and len(r.predictions) <= 3
        for p in r.predictions:
            assert set(p) == PRED_KEYS
            assert p["label"] == CLASSES[p["class_id"]]
            x1, y1, x2, y2 = p["box"]
            assert 0 <= x1 <= x2 <= r.width and 0 <= y1 <= y2 <= r.height
            assert p["mask"]["size"] == [r.height, r.width] and isinstance(p["mask"]["counts"], str)
            assert decode_rle(p["mask"]).shape == (r.height, r.width)


def test_cli_json_save_dir_and_save_masks(tiny_ckpt, scene_folder, tmp_path):
    from cnnkit.tasks.instance.post import decode_rle

    out = tmp_path / "pics"
    res = _cli(
        "instance",
        scene_folder,
        "--weights",
        tiny_ckpt,
        "--conf",
        "0",
        "--max-det",
        "2",
        "--mask-threshold",
        "0.3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "-f",
        "json",
        "--save-dir",
        out,
        "--save-masks",
    )
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert len(records) == 3
    assert sorted(p.name.split("-")[0] for p in out.glob("*.jpg")) == ["scene_0", "scene_1", "scene_2"]
    n_masks = 0
    for r in records:
        assert Image.open(r["saved"]).size == (r["width"], r["height"])
        for p in r["predictions"]:
            png = np.asarray(Image.open(p["mask_file"])) > 0
            assert np.array_equal(png, decode_rle(p["mask"]))
            n_masks += 1
    assert n_masks == len(list((out / "masks").glob("*.png"))) > 0


def test_cli_conf_filters_everything(tiny_ckpt, scene_folder):
    res = _cli("instance", scene_folder / "scene_0.png", "--weights", tiny_ckpt, "--conf", "1.0", "-f", "jsonl")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["predictions"] == []


def test_agnostic_nms_leaves_no_two_classes_on_one_instance(scenes):
    from tests.fixtures.detect import cross_class_overlap

    folder, _ = scenes
    args = ["instance", str(folder), "--model", "shapes-maskrcnn", "--conf", "0.01", "--format", "jsonl"]

    def records(*extra: str) -> list[dict]:
        result = runner.invoke(app, [*args, *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert cross_class_overlap(records()) > 0.5  # the heads suppress within each class only (at 0.5)
    agnostic = records("--agnostic-nms")
    assert cross_class_overlap(agnostic) <= 0.5 + 1e-6 and any(r["predictions"] for r in agnostic)


def test_tracking_an_instance_checkpoint_keeps_its_masks(tiny_ckpt, tmp_path):
    from cnnkit.tasks.track.predict import InstanceTracker, Tracker

    tracker = Tracker.load(weights=str(tiny_ckpt), threads=1, save_pictures=False, save_masks=True)
    assert isinstance(tracker, InstanceTracker) and tracker.task == "track"
    assert tracker.saves_pictures and not tracker.save_pictures  # masks alone still need full-size frames
    assert not isinstance(Tracker.load(threads=1), InstanceTracker)  # the bundled detector
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(CnnkitError, match="missing.safetensors"):  # the detector's loader names the file
        Tracker.load(weights=str(missing), threads=1)


def test_cli_format_coco_loads_in_pycocotools(tiny_ckpt, coco_data):
    from pycocotools.coco import COCO

    res = _cli(
        "instance", coco_data / "val" / "images", "--weights", tiny_ckpt, "--conf", "0", "--max-det", "3", "-f", "coco"
    )
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)
    assert results and all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    assert all(1 <= r["category_id"] <= len(CLASSES) for r in results)
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "width": 64, "height": 64} for i in {r["image_id"] for r in results}],
        "annotations": [],
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)],
    }
    gt.createIndex()
    assert len(gt.loadRes(results).getAnnIds()) == len(results)


def test_val_json_and_table(tiny_ckpt, coco_data, tmp_path):
    res = _cli("instance", "val", coco_data, "--weights", tiny_ckpt, "--batch-size", "2", "-f", "json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["images"] == 2 and summary["failed"] == []
    for kind in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(summary[kind])
        assert all(0.0 <= summary[kind][k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    out = tmp_path / "val.txt"
    res = _cli("instance", "val", coco_data / "val" / "annotations.json", "--weights", tiny_ckpt, "-o", out)
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "segm" in text and "bbox" in text and "AP50" in text


def test_val_rejects_bad_format(tiny_ckpt, coco_data):
    res = _cli("instance", "val", coco_data, "--weights", tiny_ckpt, "-f", "csv")
    assert res.exit_code == 2


def test_coco_ap_agrees_with_torchmetrics(coco_data):
    """pycocotools AP through cnnkit.eval.coco equals torchmetrics' MeanAveragePrecision (segm and bbox)."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    from cnnkit.data.coco import read_coco
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.records import Record
    from cnnkit.tasks.instance.post import decode_rle, encode_rle

    ds = read_coco(coco_data, "train")
    rng = np.random.default_rng(0)
    coco = CocoResults(image_ids={str(im["id"]): im["id"] for im in ds.gt["images"]})
    preds, targets = [], []
    for im in ds.gt["images"]:
        anns = ds.annotations_of(im["id"])
        gt_masks = [decode_rle(a["segmentation"]) for a in anns]
        boxes, masks, scores, labels, items = [], [], [], [], []
        for a, m in zip(anns, gt_masks):
            shifted = np.roll(m, int(rng.integers(0, 4)), axis=1)  # imperfect masks: AP strictly between 0 and 1
            ys, xs = np.nonzero(shifted)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            score = float(rng.uniform(0.3, 1.0))
            items.append(
                {"label": "", "class_id": a["category_id"] - 1, "score": score, "box": box, "mask": encode_rle(shifted)}
            )
            boxes.append(box), masks.append(shifted), scores.append(score), labels.append(a["category_id"])
        coco.add(Record(path=str(im["id"]), task="instance", model="", predictions=items))
        preds.append(
            {
                "boxes": torch.tensor(boxes).reshape(-1, 4),
                "scores": torch.tensor(scores),
                "labels": torch.tensor(labels),
                "masks": torch.from_numpy(np.stack(masks)),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(
                    [
                        [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns
                    ],
                    dtype=torch.float32,
                ),
                "labels": torch.tensor([a["category_id"] for a in anns]),
                "masks": torch.from_numpy(np.stack(gt_masks)),
            }
        )
    for iou_type in ("segm", "bbox"):
        ours = evaluate(ds.gt, coco.results(), iou_type)
        metric = MeanAveragePrecision(iou_type=iou_type)
        metric.update(preds, targets)
        theirs = metric.compute()
        assert abs(ours["AP"] - float(theirs["map"])) < 1e-6
        assert abs(ours["AP50"] - float(theirs["map_50"])) < 1e-6
        assert abs(ours["AP75"] - float(theirs["map_75"])) < 1e-6


def test_plain_state_dict_with_model(tiny_ckpt, scene_folder, tmp_path):
    import torch

    from cnnkit.models.checkpoint import load_state_dict

    pth = tmp_path / "state.pth"
    torch.save(load_state_dict(tiny_ckpt), pth)
    res = _cli(
        "instance",
        scene_folder / "scene_1.png",
        "--model",
        "shapes-maskrcnn",
        "--weights",
        pth,
        "--conf",
        "0",
        "-f",
        "jsonl",
    )
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.splitlines()[0])
    assert rec["model"] == "shapes-maskrcnn" and rec["error"] is None


def test_torchvision_model_offline_is_a_clear_error(scene_folder):
    res = _cli("instance", scene_folder / "scene_0.png", "--model", "maskrcnn_resnet50_fpn")
    assert res.exit_code == 1
    assert "MaskRCNN_ResNet50_FPN_Weights.COCO_V1" in res.output and "--weights" in res.output


def test_unknown_model_is_usage_error(scene_folder):
    res = _cli("instance", scene_folder / "scene_0.png", "--model", "nope")
    assert res.exit_code == 2 and "shapes-maskrcnn" in res.output


def test_registry_entries_and_labels():
    from cnnkit.models import hub
    from cnnkit.models.registry import list_models

    names = [s.name for s in list_models(task="instance")]
    assert {"shapes-maskrcnn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"} <= set(names)
    for name in ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"):
        spec = next(s for s in list_models(task="instance") if s.name == name)
        categories = hub.torchvision_weights(spec.weights).meta["categories"]
        assert categories[0] == "__background__" and categories[1] == "person"


def test_light_builder_heads_follow_num_classes():
    from cnnkit.models.registry import count_parameters
    from cnnkit.tasks.instance.zoo import light_maskrcnn

    model = light_maskrcnn(3, min_size=64, max_size=64)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert count_parameters(model) * 2 < 25e6  # fits 25 MB in fp16


def test_subprocess_smoke(tiny_ckpt, scene_folder):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnkit",
            "instance",
            str(scene_folder / "scene_2.png"),
            "--weights",
            str(tiny_ckpt),
            "--conf",
            "0",
            "-f",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.splitlines()[0])
    assert rec["task"] == "instance" and rec["width"] == 64


def test_thin_and_one_pixel_images(tiny_ckpt, tmp_path):
    """Degenerate shapes are padded for the network and answered in their own pixels."""
    from cnnkit.tasks.instance.post import decode_rle

    thin, dot = tmp_path / "thin.png", tmp_path / "dot.png"
    Image.new("RGB", (1, 300), (10, 200, 10)).save(thin)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(dot)
    res = _cli("instance", thin, dot, "--weights", tiny_ckpt, "--conf", "0", "--max-det", "2", "-f", "jsonl")
    assert res.exit_code == 0, res.output
    for line in res.stdout.splitlines():
        rec = json.loads(line)
        assert rec["error"] is None
        for p in rec["predictions"]:
            assert decode_rle(p["mask"]).shape == (rec["height"], rec["width"])
            assert p["box"][2] <= rec["width"] and p["box"][3] <= rec["height"]


def _mixed_sizes(tmp_path):
    """Four shapes scenes at four sizes: one batch of them gets padded to the largest."""
    from cnnkit.data.shapes import scene

    paths = []
    for i, (w, h) in enumerate([(128, 128), (180, 100), (96, 160), (200, 90)]):
        path = tmp_path / f"mixed_{i}.png"
        Image.fromarray(scene(3, i, size=128).image).resize((w, h)).save(path)
        paths.append(str(path))
    return paths


def test_results_do_not_depend_on_the_batch_size_with_mixed_image_sizes(tmp_path):
    import cnnkit

    paths = _mixed_sizes(tmp_path)
    one = [r.to_dict()["predictions"] for r in cnnkit.instance(paths, conf=0.05, batch_size=1)]
    four = [r.to_dict()["predictions"] for r in cnnkit.instance(paths, conf=0.05, batch_size=4)]
    assert any(one)
    assert [[(p["label"], p["box"], p["score"]) for p in ps] for ps in one] == [
        [(p["label"], p["box"], p["score"]) for p in ps] for ps in four
    ]


def test_val_leaves_an_unreadable_image_out_with_its_objects(tmp_path):
    """As every val: the objects of an image that could not be read are not counted as missed."""
    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.instance.val import validate

    full = tmp_path / "full"
    export_shapes(full, "coco", n=6, seed=5, imgsz=96, val_fraction=0.99)
    ann = json.loads((full / "val" / "annotations.json").read_text())
    gone = ann["images"][0]
    assert any(a["image_id"] == gone["id"] for a in ann["annotations"])
    fewer = tmp_path / "fewer"
    export_shapes(fewer, "coco", n=6, seed=5, imgsz=96, val_fraction=0.99)
    ann["images"] = ann["images"][1:]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != gone["id"]]
    (fewer / "val" / "annotations.json").write_text(json.dumps(ann))
    damaged = next((full / "val").rglob(gone["file_name"].rsplit("/", 1)[-1]))
    damaged.write_bytes(b"not an image")
    with_bad = validate(str(full), conf=0.05)
    without = validate(str(fewer), conf=0.05)
    assert len(with_bad["failed"]) == 1 and with_bad["images"] == without["images"] == len(ann["images"])
    assert with_bad["bbox"]["AP"] == without["bbox"]["AP"] and with_bad["segm"]["AP"] == without["segm"]["AP"]


def test_classes_with_max_det_keep_the_best_of_those_classes(tmp_path):
    """The heads keep their top N over every class; a class filter after them left nothing when N was max_det
    and another class scored higher."""
    import cnnkit

    for rec in cnnkit.instance(_mixed_sizes(tmp_path), conf=0.05, batch_size=1):
        ranked = sorted(rec.predictions, key=lambda p: -p["score"])
        others = [p for p in ranked if p["label"] != ranked[0]["label"]] if ranked else []
        if others:
            wanted = others[0]["label"]
            (top,) = cnnkit.instance(rec.path, conf=0.05, classes=[wanted], max_det=1)[0].predictions
            assert top["label"] == wanted and top["score"] == others[0]["score"]
            return
    pytest.fail("no image with detections of two classes")


def test_val_refuses_an_image_whose_size_is_not_the_one_its_annotations_say(tmp_path):
    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.instance.val import validate

    data = tmp_path / "coco"
    export_shapes(data, "coco", n=4, seed=5, imgsz=64, val_fraction=0.99)
    image = sorted((data / "val").rglob("*.png"))[0]
    Image.open(image).resize((96, 96)).save(image)
    result = validate(str(data), conf=0.05)
    assert [f["path"] for f in result["failed"]] == [str(image)]
    assert "the image is 96x96, annotations.json says 64x64" in result["failed"][0]["error"]


def test_models_counts_the_parameters_of_the_rcnn_that_runs():
    """`cnnkit models` counted Mask/Faster R-CNN with plain BatchNorm (44,454,513); the network that runs has
    torchvision's frozen BatchNorm, whose parameter count torchvision publishes (44,401,393)."""
    from torchvision.models import get_model_weights

    from cnnkit.models.describe import describe
    from cnnkit.models.registry import get_spec

    for name in ("maskrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"):
        assert describe(get_spec(name))["parameters"] == get_model_weights(name).DEFAULT.meta["num_params"]
