"""Hostile datasets for ``val`` and ``finetune``: label files, COCO JSON, masks and videos that are wrong.

A bad annotation is a one-line reason naming the file (and line or entry), never a traceback; an image
whose annotation is bad is left out and named, the others are scored, and the run exits 1. Every
dataset is made here by ``cnnkit data shapes`` in ``tmp_path`` and then damaged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError, UsageError

runner = CliRunner()


def _data(tmp_path: Path, layout: str, n: int = 8, *extra: str) -> Path:
    out = tmp_path / layout
    result = runner.invoke(
        app, ["data", "shapes", str(out), "--layout", layout, "--n", str(n), "--imgsz", "64", *extra]
    )
    assert result.exit_code == 0, result.output
    return out


def _no_traceback(result) -> None:
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("nan 0.5 0.5 0.1 0.1", "expected `class cx cy w h` numbers"),
        ("abc 0.5 0.5 0.1 0.1", "expected `class cx cy w h` numbers"),
        ("9 0.5 0.5 0.2 0.2", "class 9 is not one of the dataset's 5"),
        ("-1 0.5 0.5 0.1 0.1", "class -1 is not one of the dataset's 5"),
        ("0 1.7 1.5 0.2 0.2", "is not inside the image"),
        ("0 0.5 0.5 -0.2 0.2", "is not inside the image"),
    ],
)
def test_detect_val_names_a_bad_label_line_and_scores_the_rest(tmp_path: Path, line: str, reason: str) -> None:
    data = _data(tmp_path, "yolo", 10)
    labels = sorted((data / "labels" / "val").glob("*.txt"))
    labels[0].write_text(line + "\n")
    result = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    _no_traceback(result)
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    assert metrics["failed"] == 1 and metrics["images"] == len(labels) - 1
    assert f"{labels[0]}:1: " in result.stderr and reason in result.stderr


def test_detect_val_names_a_label_file_that_is_not_text(tmp_path: Path) -> None:
    data = _data(tmp_path, "yolo", 10)
    label = sorted((data / "labels" / "val").glob("*.txt"))[0]
    label.write_bytes(b"\xff\xfe\x00garbage")
    result = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    _no_traceback(result)
    assert result.exit_code == 1 and f"{label}: not a readable label file" in result.stderr


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda a: a.pop("segmentation"), "segmentation must be polygons"),
        (lambda a: a.update(segmentation=[[1, 2, 3]]), "segmentation must be polygons"),
        (lambda a: a.update(bbox=[1, 2]), "bbox must be [x, y, width, height]"),
        (lambda a: a.update(category_id=99), "category_id 99 is not one of the categories"),
        (lambda a: a.update(image_id=12345), "image_id 12345 is not one of the images"),
        (lambda a: a.pop("id"), "needs an id of its own"),
        (lambda a: a.update(segmentation={"size": [64, 64], "counts": "abc"}), "RLE counts must be a COCO string"),
        (lambda a: a.update(segmentation={"size": [64, 64], "counts": "zzzzzzzz"}), "RLE counts must be a COCO"),
        (lambda a: a.update(segmentation={"size": [64, 64], "counts": "0"}), "RLE counts must be a COCO string"),
    ],
)
def test_instance_val_names_a_bad_coco_annotation(tmp_path: Path, damage, reason: str) -> None:
    data = _data(tmp_path, "coco", 6)
    path = data / "val" / "annotations.json"
    gt = json.loads(path.read_text())
    damage(gt["annotations"][0])
    path.write_text(json.dumps(gt))
    result = runner.invoke(app, ["instance", "val", str(data)])
    _no_traceback(result)
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert str(path) in line and "annotations[0]" in line and reason in line


def test_a_coco_rle_string_is_read_as_pycocotools_reads_it(tmp_path: Path) -> None:
    """The check decodes an RLE string itself (pycocotools takes any text, giving a mask of garbage): every
    mask pycocotools encodes passes, with the run lengths the mask has."""
    from pycocotools import mask as coco_mask

    from cnnkit.data.coco import _rle_runs

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        flat = m.flatten(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        if flat[0]:
            runs = [0, *runs]
        assert _rle_runs(coco_mask.encode(np.asfortranarray(m))["counts"].decode()) == runs


def test_coco_categories_sharing_a_name_are_refused(tmp_path: Path) -> None:
    """Two categories named "circle": a model's circles were scored against one of them (AP 0.63 fell to 0.26,
    exit 0) and finetune wrote a checkpoint with the label twice."""
    data = _data(tmp_path, "coco", 6)
    path = data / "val" / "annotations.json"
    gt = json.loads(path.read_text())
    gt["categories"][1]["name"] = gt["categories"][0]["name"]
    path.write_text(json.dumps(gt))
    result = runner.invoke(app, ["instance", "val", str(data)])
    _no_traceback(result)
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert str(path) in line and "categories[1]" in line and f"its name {gt['categories'][0]['name']!r}" in line


@pytest.mark.parametrize("where", ["classes.txt", "cnnkit-data.json"])
def test_a_class_named_twice_in_a_masks_dataset_is_refused(tmp_path: Path, where: str) -> None:
    """Two mask values of one name were scored as one class (mIoU fell, exit 0, nothing said)."""
    data = _data(tmp_path, "masks", 10)
    if where == "classes.txt":
        (data / where).write_text("background\ncircle\ncircle\ntriangle\nstar\nhexagon\n")
    else:
        summary = json.loads((data / where).read_text())
        summary["classes"][1] = summary["classes"][0]
        (data / where).write_text(json.dumps(summary))
    result = runner.invoke(app, ["segment", "val", str(data)])
    _no_traceback(result)
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert str(data / where) in line and "is named more than once" in line


def test_instance_val_names_polygons_whose_image_has_no_size(tmp_path: Path) -> None:
    data = _data(tmp_path, "coco", 6)
    path = data / "val" / "annotations.json"
    gt = json.loads(path.read_text())
    gt["annotations"][0]["segmentation"] = [[1, 1, 20, 1, 20, 20]]
    image = next(im for im in gt["images"] if im["id"] == gt["annotations"][0]["image_id"])
    del image["width"], image["height"]
    path.write_text(json.dumps(gt))
    result = runner.invoke(app, ["instance", "val", str(data)])
    _no_traceback(result)
    assert result.exit_code == 1 and "needs a width and a height" in result.stderr and str(path) in result.stderr


def test_segment_val_names_bad_masks_and_scores_the_rest(tmp_path: Path) -> None:
    data = _data(tmp_path, "masks", 20)
    masks = sorted((data / "val" / "masks").glob("*.png"))
    assert len(masks) >= 3
    masks[0].write_bytes(b"xx")  # not a PNG
    value = np.asarray(Image.open(masks[1])).copy()
    value[0, 0] = 200  # no class of six
    Image.fromarray(value, mode="L").save(masks[1])
    result = runner.invoke(app, ["segment", "val", str(data), "-f", "json"])
    _no_traceback(result)
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    assert {Path(f["path"]).stem for f in metrics["failed"]} == {masks[0].stem, masks[1].stem}
    assert metrics["images"] == len(masks) - 2
    assert f"{masks[0]}: not a readable mask PNG" in result.stderr
    assert f"{masks[1]}: mask value 200 is not a class" in result.stderr


def test_segment_training_pairs_are_read_upright_as_val_reads_them(tmp_path: Path) -> None:
    """A JPEG stored sideways with EXIF orientation 6 and its mask drawn upright: training reads the pair as
    predict and val see the image, not rotated against each other."""
    from cnnkit.data.masks import read_pair
    from cnnkit.io.decode import decode

    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:, :20] = 255  # a white band on the left of the shown picture
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # turned as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6
    image = tmp_path / "photo.jpg"
    stored.save(image, exif=exif, quality=95)
    mask = tmp_path / "photo.png"
    Image.fromarray((upright[..., 0] > 0).astype(np.uint8), mode="L").save(mask)
    rgb, target = read_pair(image, mask, classes=2)
    assert rgb.shape[:2] == target.shape == (40, 60)
    assert np.abs(rgb.astype(int) - decode(str(image)).rgb.astype(int)).max() < 8
    assert (rgb[..., 0] > 127).mean() == pytest.approx(target.mean(), abs=0.02)


def test_track_val_names_failed_frames_and_sequences_without_truth(tmp_path: Path) -> None:
    pytest.importorskip("motmetrics")
    data = tmp_path / "videos"
    assert (
        runner.invoke(
            app, ["data", "shapes", str(data), "--video", "--frames", "12", "--n", "2", "--imgsz", "96"]
        ).exit_code
        == 0
    )
    video = data / "shapes-000.mp4"
    raw = bytearray(video.read_bytes())
    a, b = len(raw) // 3, len(raw) // 2  # the index is at the end: the file opens, frames in between do not decode
    raw[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    video.write_bytes(bytes(raw))
    (data / "shapes-001" / "gt" / "gt.txt").unlink()
    result = runner.invoke(app, ["track", "val", str(data), "-f", "json"])
    _no_traceback(result)
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout)
    assert metrics["failed"] and all(f["path"] == str(video) and "frame" in f["error"] for f in metrics["failed"])
    assert "shapes-001.mp4: no ground truth at shapes-001/gt/gt.txt; not scored" in result.stderr


def test_a_val_split_without_some_classes_is_trained_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`cnnkit data shapes --layout imagefolder --n 20` writes a val split too small for every class: the missing
    classes are trained and not scored (a warning says which); a val class train lacks is still refused."""
    from cnnkit.data.folder import load_folder_dataset

    root = tmp_path / "cls"
    for split, classes in (("train", ("a", "b", "c")), ("val", ("a", "b"))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(root / split / c / f"{i}.png")
    with caplog.at_level("WARNING", logger="cnnkit"):
        data = load_folder_dataset(root)
    assert data.classes == ["a", "b", "c"] and sorted(set(data.val.targets)) == [0, 1]
    assert "val has no images of c" in caplog.text
    (root / "val" / "d").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "val" / "d" / "0.png")
    with pytest.raises(UsageError, match="val has class folders train lacks: d"):
        load_folder_dataset(root)


def test_detect_training_names_label_files_ultralytics_would_drop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cnnkit.data import yolo_yaml
    from cnnkit.tasks.detect.train import check_labels

    data = _data(tmp_path, "yolo", 10)
    bad = sorted((data / "labels" / "train").glob("*.txt"))[:2]
    bad[0].write_text("9 0.5 0.5 0.2 0.2\n")
    bad[1].write_text("0 0.5\n")
    val = sorted((data / "labels" / "val").glob("*.txt"))[0]
    val.write_text("7 0.5 0.5 0.2 0.2\n")
    logger = logging.getLogger("cnnkit")  # the CLI run above set it not to propagate
    logger.addHandler(caplog.handler)
    try:
        assert check_labels(yolo_yaml.read(data / "data.yaml")) == 3
    finally:
        logger.removeHandler(caplog.handler)
    assert f"left out of training: {bad[0]}:1: class 9" in caplog.text
    assert f"left out of training: {bad[1]}:1: expected `class cx cy w h`" in caplog.text
    assert f"left out of val: {val}:1: class 7" in caplog.text  # was said "left out of training"


def test_yolo_labels_are_read_as_ultralytics_reads_them(tmp_path: Path) -> None:
    """A polygon line is its bounding box, a box past the edge is clipped, a repeated line counts once, and a
    six-number line (a `conf` column) is refused."""
    from cnnkit.data.yolo_yaml import read_labels

    label = tmp_path / "a.txt"
    label.write_text(
        "1 0.5 0.2 0.7 0.5 0.5 0.8 0.3 0.5\n"  # a diamond around (0.5, 0.5), 0.4 wide and 0.6 high
        "0 0.05 0.5 0.2 0.2\n"  # reaches 0.05 past the left edge
        "0 0.05 0.5 0.2 0.2\n"
    )
    rows = read_labels(label, 2)
    assert [r[0] for r in rows] == [1, 0]
    assert rows[0][1:] == pytest.approx((0.5, 0.5, 0.4, 0.6))
    assert rows[1][1:] == pytest.approx((0.075, 0.5, 0.15, 0.2))
    label.write_text("0 0.5 0.5 0.2 0.2 0.9\n")
    with pytest.raises(CnnkitError, match="expected `class cx cy w h` numbers"):
        read_labels(label, 2)


def test_yolo_labels_with_a_byte_order_mark_are_read_and_mixed_kinds_are_said(tmp_path: Path, caplog) -> None:
    """Notepad starts a UTF-8 file with a byte-order mark: ultralytics reads it (utf-8-sig), cnnkit refused every
    such file (`'\\ufeff4 …'`), so detect val scored 0 beside ultralytics' 0.99. A file mixing box and polygon
    rows, which ultralytics leaves out, is read here as its rows say, and said."""
    import logging

    from cnnkit.data.yolo_yaml import read_labels

    label = tmp_path / "a.txt"
    label.write_bytes("\ufeff1 0.5 0.5 0.2 0.4\n".encode())
    assert read_labels(label, 2) == [pytest.approx((1, 0.5, 0.5, 0.2, 0.4))]
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.2 0.7 0.5 0.5 0.8 0.3 0.5\n")
    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)
    try:
        assert [r[0] for r in read_labels(label, 2)] == [0, 1]
    finally:
        logger.removeHandler(caplog.handler)
    assert "box rows (line 1) and polygon rows (line 2) mixed; ultralytics leaves this image out" in caplog.text


def test_detect_val_scores_polygon_labels_as_their_boxes(tmp_path: Path) -> None:
    data = _data(tmp_path, "yolo", 10)
    boxes = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    assert boxes.exit_code == 0, boxes.output
    for label in (data / "labels" / "val").glob("*.txt"):
        lines = []
        for line in label.read_text().splitlines():
            c, cx, cy, w, h = line.split()
            cx, cy, w, h = map(float, (cx, cy, w, h))
            corners = [cx, cy - h / 2, cx + w / 2, cy, cx, cy + h / 2, cx - w / 2, cy]  # a diamond in the box
            lines.append(" ".join([c, *(f"{v:.6f}" for v in corners)]))
        label.write_text("\n".join(lines) + "\n")
    polygons = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    assert polygons.exit_code == 0, polygons.output
    a, b = json.loads(boxes.stdout), json.loads(polygons.stdout)
    assert b["images"] == a["images"] > 0
    assert b["mAP50"] == pytest.approx(a["mAP50"], abs=1e-3) and b["mAP50"] > 0.5


@pytest.mark.parametrize("task", ["classify", "detect", "segment", "instance", "track"])
def test_val_of_a_missing_dataset_is_a_usage_error_naming_it(tmp_path: Path, task: str) -> None:
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, [task, "val", str(missing)])
    _no_traceback(result)
    assert result.exit_code == 2 and str(missing) in result.stderr


def _first_rle_size(gt: dict) -> list:
    image = next(im for im in gt["images"] if im["id"] == gt["annotations"][0]["image_id"])
    return [image["height"] + 1, image["width"]]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda gt: gt["annotations"][0].update(segmentation=[[1e9, 10, 20, 10, 20, 20]]), "not a number near"),
        (lambda gt: gt["annotations"][0].update(segmentation=[[float("nan"), 1, 2, 1, 2, 2]]), "not a number near"),
        (lambda gt: gt["annotations"][0].update(segmentation=[]), "segmentation must be polygons"),
        (lambda gt: gt["annotations"][0].update(segmentation={"size": "x", "counts": "a"}), "RLE size must be"),
        (
            lambda gt: gt["annotations"][0].update(segmentation={"size": _first_rle_size(gt), "counts": "a"}),
            "its RLE is",
        ),
        (lambda gt: gt["annotations"][0].update(segmentation={"size": [4, 4], "counts": 5}), "RLE"),
        (lambda gt: gt["categories"].append(dict(gt["categories"][0], name="again")), "of its own"),
        (lambda gt: gt["images"][0].update(id=[1]), "of its own"),
        (lambda gt: gt["images"][0].update(file_name=5), "needs an id and a file_name"),
        (lambda gt: gt["categories"][0].update(id=str(gt["categories"][0]["id"])), "all numbers or all text"),
    ],
)
def test_crafted_coco_is_refused_in_one_line_before_pycocotools_sees_it(tmp_path: Path, damage, reason: str) -> None:
    data = _data(tmp_path, "coco", 6)
    path = data / "val" / "annotations.json"
    gt = json.loads(path.read_text())
    damage(gt)
    path.write_text(json.dumps(gt))
    result = runner.invoke(app, ["instance", "val", str(data)])
    _no_traceback(result)
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert str(path) in line and reason in line


def test_coco_json_nested_too_deep_or_without_images_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "annotations.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(app, ["instance", "val", str(path)])
    _no_traceback(result)
    assert result.exit_code == 1 and "not a readable COCO JSON" in result.stderr
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    result = runner.invoke(app, ["instance", "val", str(path)])
    assert result.exit_code == 1 and "no images" in result.stderr


def test_detect_training_names_images_ultralytics_would_drop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A train or val image that does not decode left detect's training and its val mAP without a word."""
    from cnnkit.data import yolo_yaml
    from cnnkit.tasks.detect.train import check_labels

    data = _data(tmp_path, "yolo", 10)
    train = sorted((data / "images" / "train").iterdir())[0]
    val = sorted((data / "images" / "val").iterdir())[0]
    train.write_bytes(b"\xff\xd8\xff garbage")
    val.write_bytes(b"\x89PNG\r\n\x1a\nxx")
    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)
    try:
        assert check_labels(yolo_yaml.read(data / "data.yaml")) == 2
    finally:
        logger.removeHandler(caplog.handler)
    assert f"left out of training: {train}:" in caplog.text and f"left out of val: {val}:" in caplog.text


def test_a_val_split_whose_every_label_file_is_refused_is_one_line_for_val_and_training(tmp_path: Path) -> None:
    """With every val label file refused (a sixth column), ultralytics raises "No valid images found": detect
    val (comparing with ultralytics) and detect training ended in its traceback, training leaving a run folder."""
    data = _data(tmp_path, "yolo", 10)
    for label in (data / "labels" / "val").glob("*.txt"):
        label.write_text("".join(f"{line} 1.0\n" for line in label.read_text().splitlines()))
    val = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "-f", "json", "--threads", "1"])
    _no_traceback(val)
    assert val.exit_code == 1 and "ultralytics' own val did not run (No valid images found" in val.stderr
    assert "ultralytics" not in json.loads(val.stdout)
    run = tmp_path / "run"
    args = ["--task", "detect", "--epochs", "1", "--imgsz", "64", "--batch-size", "4", "--threads", "1"]
    trained = runner.invoke(app, ["finetune", str(data / "data.yaml"), *args, "--save-dir", str(run)])
    _no_traceback(trained)
    assert trained.exit_code == 1 and "training stopped (No valid images found" in trained.stderr
    assert not run.exists()


def test_instance_training_leaves_out_an_image_not_the_size_its_annotations_give(tmp_path: Path, caplog) -> None:
    """`instance val` refused an image of another size than annotations.json gives; training took it, with
    64×64 masks and boxes past a 32×32 picture, and said nothing."""
    from cnnkit.data.coco import read_coco
    from cnnkit.tasks.instance.train import _decodable

    data = _data(tmp_path, "coco", 8)
    ds = read_coco(data, "train")
    first = ds.image_path(ds.gt["images"][0])
    Image.open(first).resize((32, 32)).save(first)
    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)
    try:
        kept = _decodable(ds, "training")
    finally:
        logger.removeHandler(caplog.handler)
    assert [im["id"] for im in kept.gt["images"]] == [im["id"] for im in ds.gt["images"][1:]]
    assert f"{first}: the image is 32x32, annotations.json says 64x64" in caplog.text


def test_a_split_folder_linked_in_elsewhere_is_read_as_ultralytics_reads_it(tmp_path: Path) -> None:
    """Images (and their labels) under a symlinked sub-folder of a split: ultralytics' glob follows the link,
    cnnkit's walk did not, so `detect val` scored fewer images than the ultralytics figures beside them."""
    from cnnkit.data import yolo_yaml

    data = _data(tmp_path, "yolo", 12)
    images, labels = data / "images" / "val", data / "labels" / "val"
    moved = sorted(images.glob("*.png"))[:2]
    assert moved
    away = tmp_path / "elsewhere"
    (away / "images").mkdir(parents=True)
    (away / "labels").mkdir(parents=True)
    for image in moved:
        image.rename(away / "images" / image.name)
        (labels / f"{image.stem}.txt").rename(away / "labels" / f"{image.stem}.txt")
    (images / "sub").symlink_to(away / "images", target_is_directory=True)
    (labels / "sub").symlink_to(away / "labels", target_is_directory=True)
    (images / "sub" / "back").symlink_to(images, target_is_directory=True)  # a loop: not walked round
    listed = yolo_yaml.split_images(yolo_yaml.read(data / "data.yaml"), "val")
    assert {p.name for p in listed if p.parent.name == "sub"} == {p.name for p in moved}
    assert len(listed) == len(set(listed))
    result = runner.invoke(app, ["detect", "val", str(data / "data.yaml"), "--no-compare", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == len(listed)


def test_a_class_folder_linked_in_elsewhere_is_read(tmp_path: Path) -> None:
    """Images under a symlinked folder inside a class folder were left out of `classify val` and finetune,
    while `cnnkit classify DATA -r` reads them."""
    from cnnkit.data.folder import _images

    data = _data(tmp_path, "imagefolder", 12)
    klass = next(d for d in sorted((data / "val").iterdir()) if d.is_dir())
    away = tmp_path / "more"
    away.mkdir()
    for image in sorted(klass.glob("*.png"))[:1]:
        image.rename(away / image.name)
    (klass / "more").symlink_to(away, target_is_directory=True)
    (away / "loop").symlink_to(klass, target_is_directory=True)
    found = _images(klass)
    assert [p for p in found if "/more/" in p] and len(found) == len(set(found))
    assert not [p for p in found if "/loop/" in p]
