"""The shapes generator is deterministic and its exports are consistent with each other."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import shapes
from cnnkit.data.export import export_shapes


def test_scene_is_a_pure_function_of_seed_and_index():
    a, b = shapes.scene(5, 3), shapes.scene(5, 3)
    assert np.array_equal(a.image, b.image)
    assert [(o.label, o.box) for o in a.objects] == [(o.label, o.box) for o in b.objects]
    assert not np.array_equal(a.image, shapes.scene(6, 3).image)


def test_masks_boxes_and_semantic_agree():
    for i in range(10):
        sc = shapes.scene(0, i, size=96)
        assert 1 <= len(sc.objects) <= 4
        sem = sc.semantic
        for obj in sc.objects:
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert (sem[obj.mask] == obj.class_id + 1).all()
        union = np.zeros_like(sem, bool)
        for obj in sc.objects:
            assert not (union & obj.mask).any()  # visible parts never overlap
            union |= obj.mask
        assert ((sem > 0) == union).all()


def test_classification_samples_cover_all_classes():
    labels = {shapes.classification_sample(0, i)[1] for i in range(60)}
    assert labels == set(range(len(shapes.CLASSES)))


def test_yolo_export(tmp_path):
    export_shapes(tmp_path, "yolo", 5, seed=1, imgsz=64)
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert len(labels) == 4 and len(list((tmp_path / "images" / "val").glob("*.png"))) == 1
    sc = shapes.scene(1, 0, size=64)
    rows = [list(map(float, line.split())) for line in labels[0].read_text().splitlines()]
    assert [int(r[0]) for r in rows] == [o.class_id for o in sc.objects]
    x1, y1, x2, y2 = sc.objects[0].box
    assert rows[0][1] * 64 == np.float64((x1 + x2) / 2).round(4) or abs(rows[0][1] * 64 - (x1 + x2) / 2) < 1e-3


def test_masks_export_is_palette_png(tmp_path):
    export_shapes(tmp_path, "masks", 3, seed=2, imgsz=48, val_fraction=0.0)
    mask = Image.open(tmp_path / "train" / "masks" / "train_000000.png")
    assert mask.mode == "P"
    assert np.array_equal(np.asarray(mask), shapes.scene(2, 0, size=48).semantic)


def test_coco_export_roundtrips_masks(tmp_path):
    from pycocotools import mask as mask_utils

    export_shapes(tmp_path, "coco", 3, seed=3, imgsz=48, val_fraction=0.0)
    data = json.loads((tmp_path / "train" / "annotations.json").read_text())
    assert len(data["images"]) == 3 and len(data["categories"]) == len(shapes.CLASSES)
    first = [a for a in data["annotations"] if a["image_id"] == 1]
    sc = shapes.scene(3, 0, size=48)
    for ann, obj in zip(first, sc.objects):
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), obj.mask)
        assert ann["category_id"] == obj.class_id + 1


def test_imagefolder_export(tmp_path):
    export_shapes(tmp_path, "imagefolder", 10, seed=4, imgsz=32)
    files = list(tmp_path.glob("*/*/*.png"))
    assert len(files) == 10
    assert {f.parent.name for f in files} <= set(shapes.CLASSES)


def test_moving_frames_export_labels_the_visible_shapes(tmp_path):
    """Frames of moving-shape videos as a YOLO set (the tracker's detector trains on them): every third
    frame, one label per shape at least 30% visible, its visible box; other images join the train split."""
    from cnnkit.data.export import export_moving_frames
    from cnnkit.data.moving import sequence

    extra = tmp_path / "other" / "images" / "train"
    summary = export_moving_frames(tmp_path / "v", 2, seed=7, every=3, frames=9, val_fraction=0.5, extra_train=[extra])
    assert summary["train"] == 3 and summary["val"] == 3
    expected = [g for t, (_, gt) in enumerate(sequence(7, 0, frames=9).frames()) if t == 3 for g in gt]
    rows = [
        line.split() for line in (tmp_path / "v" / "labels" / "train" / "train_0000_0003.txt").read_text().splitlines()
    ]
    assert len(rows) == sum(g.visibility >= 0.3 for g in expected) > 0
    first = next(g for g in expected if g.visibility >= 0.3)
    x1, y1, x2, y2 = first.box
    assert rows[0] == [
        str(first.class_id),
        f"{(x1 + x2) / 512:.6f}",
        f"{(y1 + y2) / 512:.6f}",
        f"{(x2 - x1) / 256:.6f}",
        f"{(y2 - y1) / 256:.6f}",
    ]
    import yaml

    assert yaml.safe_load((tmp_path / "v" / "data.yaml").read_text())["train"] == ["images/train", str(extra)]
    assert Image.open(tmp_path / "v" / "images" / "val" / "val_0001_0006.png").size == (256, 256)


def test_moving_frames_export_adds_the_frames_with_a_partly_hidden_shape(tmp_path):
    """``hidden_every=1``: besides every third frame, every frame in which a labelled shape is partly hidden."""
    from cnnkit.data.export import PARTLY_HIDDEN, export_moving_frames
    from cnnkit.data.moving import sequence

    export_moving_frames(tmp_path / "v", 1, seed=3, every=3, frames=40, val_fraction=0.0, hidden_every=1)
    hidden = {
        t
        for t, (_, gt) in enumerate(sequence(3, 0, frames=40).frames())
        if any(0.3 <= g.visibility < PARTLY_HIDDEN for g in gt)
    }
    assert hidden - set(range(0, 40, 3))  # the scene has partly hidden shapes off the every-third grid
    names = {p.name for p in (tmp_path / "v" / "images" / "train").iterdir()}
    assert names == {f"train_0000_{t:04d}.png" for t in set(range(0, 40, 3)) | hidden}


def test_a_yolo_dataset_copied_or_oddly_named_reads_its_own_images(tmp_path):
    """data.yaml names no absolute root (a copy read the original's images) and is real YAML (a `#` in the
    folder name started a comment)."""
    import shutil

    from cnnkit.data import yolo_yaml

    first = tmp_path / "odd #1"
    export_shapes(first, "yolo", n=6, seed=0, imgsz=32, val_fraction=0.5)
    copy = tmp_path / "copy: two"
    shutil.copytree(first, copy)
    for root in (first, copy):
        ds = yolo_yaml.read(root / "data.yaml")
        images = yolo_yaml.split_images(ds, "val")
        assert images and all(str(p).startswith(str(root)) for p in images)


def test_writing_over_a_dataset_never_writes_through_a_symlink(tmp_path):
    """`--exist-ok` replaces the dataset's own files; a symlink among them is replaced, its target left alone."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "ds"
    export_shapes(out, "yolo", n=4, seed=0, imgsz=32, val_fraction=0.25)
    label = sorted((out / "labels" / "train").glob("*.txt"))[0]
    image = sorted((out / "images" / "train").glob("*.png"))[0]
    label.unlink()
    label.symlink_to(victim)
    image.unlink()
    image.symlink_to(victim)
    export_shapes(out, "yolo", n=4, seed=3, imgsz=32, val_fraction=0.25)
    assert victim.read_text() == "precious"
    assert not label.is_symlink() and not image.is_symlink()
    Image.open(image).verify()


def test_an_imagefolder_without_val_split_is_one_finetune_carves_its_own(tmp_path):
    """With no val split the class folders sit in OUT itself (a lone ``train/`` folder read as one class)."""
    flat = tmp_path / "flat"
    export_shapes(flat, "imagefolder", n=12, seed=0, imgsz=32, val_fraction=0.0)
    assert not (flat / "train").exists() and {p.name for p in flat.iterdir() if p.is_dir()} <= set(shapes.CLASSES)


def test_a_dataset_without_val_images_is_said_to_need_them(tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    result = CliRunner().invoke(
        app, ["data", "shapes", str(tmp_path / "d"), "--n", "2", "--imgsz", "32", "--val-split", "0"]
    )
    assert result.exit_code == 0 and "no val images; finetune and val need some" in result.stderr


@pytest.mark.parametrize("layout", ["yolo", "imagefolder", "masks"])
def test_an_export_again_into_its_folder_leaves_no_file_of_the_earlier_one(tmp_path, layout):
    """`data shapes OUT --exist-ok` with another split kept the earlier export's pictures: scenes now in val stayed
    in train too (the summary said 8 train images, the folder held 13), so val leaked into training."""
    out = tmp_path / "d"
    export_shapes(out, layout, 16, seed=1, imgsz=32, val_fraction=0.2)
    (out / "mine.txt").write_text("kept\n")
    summary = export_shapes(out, layout, 16, seed=1, imgsz=32, val_fraction=0.5)
    pictures = sorted(p for p in out.rglob("*.png") if "masks" not in p.parts)
    assert len(pictures) == summary["train"] + summary["val"] == 16
    assert sum(p.name.startswith("train_") for p in pictures) == summary["train"] == 8
    assert (out / "mine.txt").read_text() == "kept\n"


def test_digits_and_videos_again_into_their_folder_leave_no_file_of_the_earlier_set(tmp_path):
    """`data digits --exist-ok` with another seed left 576 digits in both train and val; `data shapes --video
    --exist-ok` with fewer videos left the earlier ones, which `track val` scored with the new."""
    from cnnkit.data.export import export_digits
    from cnnkit.data.moving import write_sequences
    from cnnkit.tasks.track.val import sequences

    digits = tmp_path / "digits"
    export_digits(digits, size=8)
    (digits / "mine.txt").write_text("kept\n")
    summary = export_digits(digits, size=8, seed=1)
    train = {p.name for p in (digits / "train").rglob("*.png")}
    val = {p.name for p in (digits / "val").rglob("*.png")}
    assert not train & val and (len(train), len(val)) == (summary["train"], summary["val"])
    assert (digits / "mine.txt").read_text() == "kept\n"
    videos = tmp_path / "videos"
    write_sequences(videos, 3, frames=4, size=64)
    write_sequences(videos, 1, frames=4, size=64, seed=9, overwrite=True)
    assert sorted(p.name for p in videos.iterdir()) == ["shapes-000", "shapes-000.mp4", "summary.json"]
    assert [name for name, _, _ in sequences(videos)] == ["shapes-000"]
