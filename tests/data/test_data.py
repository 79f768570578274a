"""The shapes generator is deterministic and its exports are consistent with each other."""

from __future__ import annotations

import json

import numpy as np
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
