"""Datasets as users have them: quirks that other tools accept are scored as those tools score them.

MOT15's 10-column ground truth, COCO files with text ids, one file named by two image entries or images
without a size, YOLO polygons rounded just past 1, macOS `._x.png` files, 0/255 and 1-bit masks, and class
folders named in decomposed Unicode. Each was a wrong score with exit 0, a traceback, or a refusal.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError

runner = CliRunner()


def _shapes(tmp_path: Path, layout: str, n: int = 6, imgsz: int = 64) -> Path:
    out = tmp_path / layout
    result = runner.invoke(app, ["data", "shapes", str(out), "--layout", layout, "--n", str(n), "--imgsz", str(imgsz)])
    assert result.exit_code == 0, result.output
    return out


# -- MOT ground truth -------------------------------------------------------------------------------


def test_mot15_rows_with_minus_one_visibility_are_fully_visible(tmp_path: Path) -> None:
    """`frame,id,x,y,w,h,conf,-1,-1,-1` (MOT15, and cnnkit's own --format mot): -1 is "not given"."""
    from cnnkit.eval.mot import MotRow, read_mot, score

    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,20,1,-1,-1,-1\n2,1,12,10,20,20,1,-1,-1,-1\n")
    rows = read_mot(gt, truth=True)
    assert [r.visibility for r in rows] == [1.0, 1.0]
    found = [MotRow(1, 7, (10.0, 10.0, 20.0, 20.0), 0.9), MotRow(2, 7, (12.0, 10.0, 20.0, 20.0), 0.9)]
    metrics = score({"s": (rows, found)})["s"]
    assert metrics["num_objects"] == 2 and metrics["mota"] == 1.0 and metrics["idf1"] == 1.0


def test_mot_truth_with_an_id_twice_in_a_frame_is_refused_naming_the_line(tmp_path: Path) -> None:
    from cnnkit.eval.mot import read_mot

    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,20,1,1,1\n1,2,50,50,20,20,1,1,1\n1,1,80,80,20,20,1,1,1\n")
    with pytest.raises(CnnkitError, match=r"gt.txt:3: id 1 appears twice in frame 1"):
        read_mot(gt, truth=True)


def test_mot_truth_counted_from_zero_is_refused_naming_the_line(tmp_path: Path) -> None:
    """Frames count from 1 in MOT files; a 0-based file was scored shifted by one frame, with exit 0."""
    from cnnkit.eval.mot import read_mot

    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,20,1,1,1\n0,2,50,50,20,20,1,1,1\n")
    with pytest.raises(CnnkitError, match=r"gt.txt:2: frame 0: MOT frames count from 1"):
        read_mot(gt, truth=True)


def _val_with_a_row_added_to_the_first_truth(tmp_path: Path, row: str) -> tuple[Path, Path, str]:
    """Two synthetic sequences, ``row`` added to the first one's gt.txt, scored by `track val`: that sequence
    must be a failed entry (exit 1) and the other scored. The data, that gt.txt and the failed entry's reason."""
    from cnnkit.data.moving import write_sequences

    data = tmp_path / "v"
    write_sequences(data, 2, seed=5, frames=8, size=96)
    gt = data / "shapes-000" / "gt" / "gt.txt"
    gt.write_text(gt.read_text() + row + "\n")
    result = runner.invoke(app, ["track", "val", str(data), "--threads", "1", "-f", "json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    metrics = json.loads(result.stdout)
    assert list(metrics["sequences"]) == ["shapes-001"]
    (why,) = [f["error"] for f in metrics["failed"] if f["path"] == str(gt)]
    return data, gt, why


def test_track_val_refuses_truth_past_the_last_frame_of_its_video(tmp_path: Path) -> None:
    """Ground truth for frames a video does not have was scored as misses (MOTA -0.08, exit 0); TrackEval
    refuses frames past seqLength. That sequence is named and left out, the others are scored."""
    data, gt, why = _val_with_a_row_added_to_the_first_truth(tmp_path, "30,99,10,10,20,20,1,1,1")
    assert why.startswith("ground truth names frame 30, but its seqinfo.ini says 8 frames")
    seqinfo = data / "shapes-000" / "seqinfo.ini"
    seqinfo.write_text("[Sequence]\nname=shapes-000\nseqLength=30\n")
    result = runner.invoke(app, ["track", "val", str(data), "--threads", "1", "-f", "json"])
    assert result.exit_code == 0, result.output  # as TrackEval: within seqLength, frames not decoded are misses
    assert list(json.loads(result.stdout)["sequences"]) == ["shapes-000", "shapes-001"]
    seqinfo.unlink()  # then the frames decoded say how long the video is
    result = runner.invoke(app, ["track", "val", str(data), "--threads", "1", "-f", "json"])
    (why,) = [f["error"] for f in json.loads(result.stdout)["failed"] if f["path"] == str(gt)]
    assert result.exit_code == 1 and why.startswith("ground truth names frame 30, but shapes-000.mp4 has 8 frames")


def test_mota_without_ground_truth_is_null_not_minus_infinity() -> None:
    """motmetrics gives MOTA -inf when nothing is to be found; JSON has no infinity."""
    from cnnkit.eval.mot import MotRow, score

    metrics = score({"s": ([], [MotRow(1, 1, (0.0, 0.0, 5.0, 5.0), 0.9)])})["s"]
    assert metrics["mota"] is None and json.dumps(metrics, allow_nan=False)


# -- COCO -------------------------------------------------------------------------------------------


def _coco_gt() -> dict:
    rle = {"size": [8, 8], "counts": [18, 4, 4, 4, 4, 4, 26]}  # a 4x3 block, column-major runs
    return {
        "images": [{"id": "a", "file_name": "a.png"}, {"id": "b", "file_name": "b.png"}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"id": "ann-1", "image_id": "a", "category_id": 1, "bbox": [2, 2, 3, 4], "segmentation": rle},
            {"id": "ann-2", "image_id": "b", "category_id": 1, "bbox": [2, 2, 3, 4], "segmentation": rle},
        ],
    }


def test_coco_text_ids_and_images_without_a_size_are_scored(tmp_path: Path) -> None:
    """Text image and annotation ids (COCO allows them; pycocotools keeps annotation ids as floats) and
    images whose size only their RLE gives: scored, not a TypeError, ValueError or KeyError."""
    from cnnkit.data.coco import read_coco
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.records import Record

    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(_coco_gt()))
    ds = read_coco(path)
    assert [(im["width"], im["height"]) for im in ds.gt["images"]] == [(8, 8), (8, 8)]
    coco = CocoResults({"a.png": "a", "b.png": "b"}, {0: 1})
    for name in ("a.png", "b.png", "extra.png"):
        rec = Record(path=name, task="instance", model="m", width=8, height=8)
        rec.predictions = [{"label": "x", "class_id": 0, "score": 0.9, "box": [2.0, 2.0, 5.0, 6.0]}]
        coco.add(rec)
    assert [r["image_id"] for r in coco.results()] == ["a", "b", 1]
    scored = evaluate(ds.gt, coco.results()[:2], "bbox")
    assert scored["AP"] == pytest.approx(1.0)
    segm = [dict(r, segmentation=_coco_gt()["annotations"][0]["segmentation"]) for r in coco.results()[:2]]
    assert evaluate(ds.gt, segm, "segm")["AP"] == pytest.approx(1.0)


def test_coco_result_sizes_carry_no_float_noise() -> None:
    from cnnkit.eval.coco import CocoResults
    from cnnkit.records import Record

    rec = Record(path="p.png", task="detect", model="m", width=200, height=200)
    rec.predictions = [{"label": "x", "class_id": 0, "score": 0.9, "box": [84.07, 128.36, 158.46, 207.34]}]
    coco = CocoResults()
    coco.add(rec)
    assert coco.results()[0]["bbox"] == [84.07, 128.36, 74.39, 78.98]


def test_instance_val_scores_a_file_two_image_entries_name_under_both(tmp_path: Path) -> None:
    """pycocotools scores each entry; all detections went to the last id, the first one's objects missed."""
    from cnnkit.tasks.instance.val import validate

    data = _shapes(tmp_path, "coco", n=6, imgsz=96)
    ann_path = data / "val" / "annotations.json"
    ann = json.loads(ann_path.read_text())
    base = validate(str(data), conf=0.05)
    first = ann["images"][0]
    twin = dict(first, id=max(im["id"] for im in ann["images"]) + 1)
    ann["images"].append(twin)
    next_id = max(a["id"] for a in ann["annotations"]) + 1
    copies = [a for a in ann["annotations"] if a["image_id"] == first["id"]]
    ann["annotations"] += [dict(a, id=next_id + i, image_id=twin["id"]) for i, a in enumerate(copies)]
    ann_path.write_text(json.dumps(ann))
    both = validate(str(data), conf=0.05)
    assert both["images"] == base["images"] + 1 and not both["failed"]
    assert both["bbox"]["AP50"] == pytest.approx(base["bbox"]["AP50"], abs=0.02)


def test_a_category_without_ground_truth_has_no_ap_not_zero() -> None:
    """pycocotools has no value (-1) for it; 0.0 in per_class made a mean over classes wrong."""
    from cnnkit.eval.coco import evaluate

    gt = _coco_gt()
    gt["categories"].append({"id": 9, "name": "unseen"})
    found = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    scores = evaluate(gt, found, "bbox")
    assert scores["per_class"]["unseen"]["AP"] is None and scores["per_class"]["unseen"]["AP50"] is None
    seen = [c["AP"] for name, c in scores["per_class"].items() if name != "unseen"]
    assert seen and all(ap is not None for ap in seen) and scores["AP"] == pytest.approx(np.mean(seen))


def test_detect_val_scores_an_image_the_split_names_twice_twice(tmp_path: Path) -> None:
    """ultralytics scores every line of a val list; cnnkit read each file once and scored it once."""
    data = _shapes(tmp_path, "yolo", n=8)
    images = sorted(p.name for p in (data / "images" / "val").glob("*.png"))
    lines = [f"./images/val/{n}" for n in [*images, images[0]]]
    (data / "twice.txt").write_text("\n".join(lines) + "\n")
    (data / "twice.yaml").write_text(
        "train: images/train\nval: twice.txt\nnames: [circle, square, triangle, star, hexagon]\n"
    )
    once = json.loads(
        runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"]).stdout
    )
    result = runner.invoke(app, ["detect", "val", str(data / "twice.yaml"), "--no-compare", "-f", "json"])
    assert result.exit_code == 0, result.output
    twice = json.loads(result.stdout)
    first = len((data / "labels" / "val" / images[0]).with_suffix(".txt").read_text().split("\n")) - 1
    assert twice["images"] == once["images"] + 1 and twice["failed"] == 0
    assert twice["instances"] == once["instances"] + first and first > 0
    no_truth = [d for d in twice["per_class"].values() if d["instances"] == 0]
    assert all(d["mAP50"] is None and d["precision"] is None for d in no_truth)


# -- YOLO -------------------------------------------------------------------------------------------


def test_yolo_polygons_rounded_just_past_the_edge_are_read_as_ultralytics_reads_them(tmp_path: Path) -> None:
    from cnnkit.data.yolo_yaml import read_labels

    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.9 1.000001 0.95 0.99 1.000001 0.5 1.0\n")
    ((cls, cx, cy, w, h),) = read_labels(label, 2)
    assert cls == 0 and cx + w / 2 == pytest.approx(1.0) and cy + h / 2 == pytest.approx(1.0)
    label.write_text("0 0.5 0.9 1.02 0.95 0.99 1.0 0.5 1.0\n")
    with pytest.raises(CnnkitError, match="is not inside the image"):
        read_labels(label, 2)


def test_detect_val_leaves_out_macos_resource_forks_in_a_split(tmp_path: Path) -> None:
    data = _shapes(tmp_path, "yolo", n=8)
    images = data / "images" / "val"
    for image in list(images.glob("*.png"))[:2]:
        (images / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble
    (images / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    result = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["failed"] == 0 and metrics["images"] == len(list(images.glob("[!.]*.png")))


# -- masks ------------------------------------------------------------------------------------------


def _binarise(data: Path, high: int, mode: str = "L") -> None:
    for mask in data.rglob("masks/*.png"):
        values = np.asarray(Image.open(mask))
        Image.fromarray(np.where(values > 0, high, 0).astype(np.uint8)).convert(mode).save(mask)


def test_finetune_on_0_255_masks_is_refused_before_a_run_folder_is_made(tmp_path: Path) -> None:
    """255 marks pixels to ignore: a 0/255 binary mask made a 256-class model that never saw an object."""
    data = _shapes(tmp_path, "masks", n=6)
    _binarise(data, 255)
    (data / "cnnkit-data.json").unlink()  # no class names: they come from the mask values
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["finetune", str(data), "--task", "segment", "--epochs", "1", "--imgsz", "64", "--save-dir", str(out)]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "hold no class but the background (0) and 255" in result.output
    assert not out.exists()


def test_segment_val_warns_when_0_255_masks_leave_no_object_to_score(tmp_path: Path) -> None:
    data = _shapes(tmp_path, "masks", n=6)
    _binarise(data, 255)
    result = runner.invoke(app, ["segment", "val", str(data), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "no object pixel is scored" in result.stderr


def test_one_bit_masks_are_read_as_0_and_1(tmp_path: Path) -> None:
    from cnnkit.data.masks import read_mask

    mask = tmp_path / "m.png"
    Image.fromarray(np.eye(4, dtype=np.uint8) * 255).convert("1").save(mask)
    assert Image.open(mask).mode == "1"
    assert read_mask(mask).tolist() == np.eye(4, dtype=np.uint8).tolist()


# -- class folders ----------------------------------------------------------------------------------


def test_classify_val_matches_decomposed_unicode_folder_names_to_the_labels(tmp_path: Path) -> None:
    """macOS writes folder names decomposed (NFD): `étoile` is then not the label `étoile` byte for byte."""
    data = _shapes(tmp_path, "imagefolder", n=30)
    nfc, nfd = unicodedata.normalize("NFC", "étoile"), unicodedata.normalize("NFD", "étoile")
    for star in data.rglob("star"):
        star.rename(star.parent / nfc)
    train = runner.invoke(
        app,
        ["finetune", str(data), "--model", "shapes-cnn", "--epochs", "1", "--workers", "0"]
        + ["--save-dir", str(tmp_path / "run")],
    )
    assert train.exit_code == 0, train.output
    val = next(data.rglob(nfc))
    val.rename(val.parent / nfd)
    ckpt = tmp_path / "run" / "best.safetensors"
    result = runner.invoke(app, ["classify", "val", str(val.parent), "--weights", str(ckpt), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert nfc in json.loads(result.stdout)["confusion"]["labels"]


def test_cocos_own_layout_finds_its_images(tmp_path: Path) -> None:
    """`annotations/instances_val2017.json` beside `val2017/`: every image failed "no such file"."""
    from cnnkit.data.coco import read_coco

    data = _shapes(tmp_path, "coco", n=4)
    root = tmp_path / "coco2017"
    (root / "annotations").mkdir(parents=True)
    (data / "val" / "annotations.json").rename(root / "annotations" / "instances_val2017.json")
    (data / "val" / "images").rename(root / "val2017")
    ds = read_coco(root / "annotations" / "instances_val2017.json")
    assert ds.images_dir == root / "val2017"
    keypoints = root / "annotations" / "person_keypoints_val2017.json"
    (root / "annotations" / "instances_val2017.json").rename(keypoints)
    assert read_coco(keypoints).images_dir == root / "val2017"
    assert all(ds.image_path(im).is_file() for im in ds.gt["images"])


def test_segment_val_names_an_image_without_a_mask_and_scores_the_rest(tmp_path: Path) -> None:
    """As an unreadable mask does: one image without its mask stopped the whole val."""
    data = _shapes(tmp_path, "masks", n=8)
    masks = sorted((data / "val" / "masks").glob("*.png"))
    masks[0].unlink()
    result = runner.invoke(app, ["segment", "val", str(data), "-f", "json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    metrics = json.loads(result.stdout)
    assert metrics["images"] == len(masks) - 1 and len(metrics["failed"]) == 1
    assert f"no mask {masks[0].name}" in metrics["failed"][0]["error"] and masks[0].stem in result.stderr


def test_classify_val_leaves_out_an_empty_class_folder_and_says_so(tmp_path: Path) -> None:
    """An empty class folder refused the whole val."""
    data = _shapes(tmp_path, "imagefolder", n=20)
    val = data / "val" if (data / "val").is_dir() else data
    (val / "hexagon").mkdir(exist_ok=True)
    for image in (val / "hexagon").glob("*"):
        image.unlink()
    assert any(p.is_dir() and any(p.iterdir()) for p in val.iterdir())
    result = runner.invoke(app, ["classify", "val", str(val), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "class folder(s) without images, left out: hexagon" in result.stderr
    assert "hexagon" not in json.loads(result.stdout)["confusion"]["labels"]


# -- class folders under split folders named as Roboflow and Kaggle name them ----------------------------


@pytest.mark.parametrize("val_name", ["valid", "validation", "test"])
def test_a_train_folder_beside_valid_is_split_not_two_classes(tmp_path: Path, val_name: str) -> None:
    """`DATA/train` + `DATA/valid` trained a 2-class model, "train" against "valid", with exit 0."""
    from cnnkit.data.folder import load_folder_dataset
    from cnnkit.tasks.classify.val import val_folder

    shapes = _shapes(tmp_path, "imagefolder", n=20)
    (shapes / "val").rename(shapes / val_name)
    data = load_folder_dataset(shapes, workers=1)
    assert "train" not in data.classes and len(data.classes) >= 2 and data.layout == f"train/{val_name}"
    assert val_folder(shapes) == shapes / val_name


def test_a_train_folder_alone_is_split_by_val_split(tmp_path: Path) -> None:
    """It was "only one class (train)"."""
    from cnnkit.data.folder import load_folder_dataset

    shapes = _shapes(tmp_path, "imagefolder", n=20)
    (tmp_path / "only").mkdir()
    (shapes / "train").rename(tmp_path / "only" / "train")
    data = load_folder_dataset(tmp_path / "only", workers=1)
    assert "train" not in data.classes and len(data.classes) >= 2 and data.layout == "split"


def test_every_class_with_a_single_image_is_named_at_once() -> None:
    """Fixing the one class named, then rerunning, met the next: each refusal named only the first."""
    from cnnkit.data.folder import FolderSplit, stratified_split
    from cnnkit.errors import UsageError

    split = FolderSplit([Path(f"{i}.png") for i in range(6)], [0, 0, 0, 1, 2, 2])
    with pytest.raises(UsageError, match="class 'b' has a single image"):
        stratified_split(split, 0.2, 0, ["a", "b", "c"])
    split = FolderSplit([Path(f"{i}.png") for i in range(5)], [0, 0, 0, 1, 2])
    with pytest.raises(UsageError, match="classes 'b', 'c' have a single image each"):
        stratified_split(split, 0.2, 0, ["a", "b", "c"])


def test_class_folders_spelled_in_two_unicode_forms_are_one_class(tmp_path: Path) -> None:
    """A dataset whose val/ was copied on macOS holds `café` decomposed (NFD) beside train's composed one (NFC):
    the two look the same, and training refused "val has class folders train lacks: café"."""
    from cnnkit.data.folder import load_folder_dataset

    for split, form, n in (("train", "NFC", 3), ("val", "NFD", 2)):
        for k, name in enumerate(("café", "naïve")):
            folder = tmp_path / split / unicodedata.normalize(form, name)
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), (80 * k, 10 * i, 0)).save(folder / f"{i}.png")
    data = load_folder_dataset(tmp_path)
    assert data.classes == [unicodedata.normalize("NFC", c) for c in ("café", "naïve")]
    assert sorted(data.val.targets) == [0, 0, 1, 1] and len(data.train.paths) == 6


def test_mot_lines_keep_the_boxes_of_tracked_instances() -> None:
    """An instance record's masks are at its width × height; without the record's size every prediction with a
    mask was left out, so `--format mot` with Mask R-CNN wrote an empty file and exited 0."""
    from cnnkit.eval.mot import mot_lines

    mask = {"size": [8, 8], "counts": [18, 4, 4, 4, 4, 4, 26]}
    p = {"label": "star", "class_id": 3, "score": 0.9, "box": [2.0, 2.0, 5.0, 6.0], "mask": mask, "track_id": 4}
    record = {"path": "v.mp4", "frame": 0, "width": 8, "height": 8, "predictions": [p]}
    assert mot_lines(record) == ["1,4,2.00,2.00,3.00,4.00,0.9000,-1,-1,-1"]


def test_mot_file_that_is_not_text_is_one_error_naming_it(tmp_path: Path) -> None:
    from cnnkit.eval.mot import read_mot

    gt = tmp_path / "gt.txt"
    gt.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(CnnkitError, match=r"gt.txt: not a readable MOT text file"):
        read_mot(gt, truth=True)


def test_track_val_scores_the_other_sequences_when_one_truth_file_is_malformed(tmp_path: Path) -> None:
    """One malformed gt.txt ended the whole run with no report; it is a failed entry naming the file, as a
    sequence without a video is."""
    _, _, why = _val_with_a_row_added_to_the_first_truth(tmp_path, "garbage,row")
    assert "not a MOT row: garbage,row" in why
