"""The bundled models on real photos they never saw (issue 15): they know what they don't know.

The photos are held out of every retraining script (:data:`cnnkit.data.photos.HELDOUT_PHOTOS`):
scikit-learn's two sample photos, ultralytics' bus and zidane, scikit-image's left motorcycle.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.data.photos import HELDOUT_PHOTOS, load_photo
from cnnkit.data.shapes import classification_sample


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_photo(name) for name in HELDOUT_PHOTOS]


def test_the_classifier_calls_every_held_out_photo_other(photos):
    records = cnnkit.classify(photos, topk=1)
    for name, rec in zip(HELDOUT_PHOTOS, records):
        best = rec.predictions[0]
        assert best["label"] == "other" and best["score"] >= 0.9, (name, best)


def test_the_classifier_still_knows_its_shapes():
    """In-domain accuracy stays at the model card's level (≥ 0.99 top-1 on an unseen seed)."""
    samples = [classification_sample(123, i, size=64) for i in range(300)]
    records = cnnkit.classify([img for img, _ in samples], topk=1, batch_size=64)
    labels = cnnkit.load("classify").labels
    correct = sum(r.predictions[0]["label"] == labels[y] for r, (_, y) in zip(records, samples))
    assert correct / len(samples) >= 0.99


def test_the_classifier_says_other_for_textures_and_noise():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), np.full((80, 120, 3), 128, np.uint8)]
    records = cnnkit.classify(images, topk=1)
    assert [r.predictions[0]["label"] for r in records] == ["other", "other"]


def test_the_detector_finds_at_most_one_box_on_each_held_out_photo(photos):
    records = cnnkit.detect(photos)
    for name, rec in zip(HELDOUT_PHOTOS, records):
        assert rec.error is None and len(rec.predictions) <= 1, (name, rec.predictions)


def test_the_detector_still_finds_shapes_drawn_over_a_held_out_photo(photos):
    """Shapes on a photo it never saw: the photo background does not hide them."""
    from cnnkit.data.shapes import generate_scene

    rng = np.random.default_rng([9, 9])
    scene = generate_scene(rng, size=256, objects=(3, 3), radius=(0.12, 0.2), photos=[photos[0]], photo_fraction=1.0)
    record = cnnkit.detect([scene.image])[0]
    found = sorted(p["label"] for p in record.predictions)
    assert len(found) >= len(scene.objects) - 1 and set(found) <= {o.label for o in scene.objects}


def test_mask_rcnn_finds_at_most_one_instance_on_each_held_out_photo(photos):
    records = cnnkit.instance(photos)
    for name, rec in zip(HELDOUT_PHOTOS, records):
        assert rec.error is None and len(rec.predictions) <= 1, (name, len(rec.predictions))


def test_the_unet_marks_held_out_photos_as_background(photos):
    """At least 99 % background on each held-out photo (the U-Net's stage 5; the card gives each figure)."""
    segmenter = cnnkit.load("segment", model="shapes-unet")
    for name, (_, mask) in zip(HELDOUT_PHOTOS, segmenter.masks(photos)):
        assert float((mask == 0).mean()) >= 0.99, name


def test_the_deeplab_marks_held_out_photos_as_background(photos):
    """At least 99 % background on each held-out photo (its photo stage; the card gives each figure)."""
    segmenter = cnnkit.load("segment", model="shapes-deeplabv3plus")
    for name, (_, mask) in zip(HELDOUT_PHOTOS, segmenter.masks(photos)):
        assert float((mask == 0).mean()) >= 0.99, name
