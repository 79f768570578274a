"""Right on real photos: what a model sees from a photo is what its reference pipeline gives it.

A JPEG is decoded at reduced scale only where the model's own antialiased resize then gives its input within
JPEG noise of a full decode, with the crop on the original's geometry; detection, whose reference pipelines
resize without antialiasing, always reads the full image. The photos are the repository's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.mark.parametrize("photo", ["bus.jpg", "chelsea.jpg", "coffee.jpg"])
def test_the_bundled_classifier_sees_a_photo_as_from_a_full_decode(photo: str) -> None:
    """A drafted 1/8 bus photo fed the 64 px classifier pixels up to 150 levels (of 255) off, 13 on average."""
    from cnnkit.io.decode import decode
    from cnnkit.tasks.classify.predict import Classifier

    clf = Classifier.load(device="cpu", backend="torch")
    path = str(SAMPLES / photo)
    seen = clf.preprocess(decode(path, min_side=clf.min_side))
    full = clf.preprocess(decode(path))
    levels = (seen - full).abs() * torch.tensor(clf.pre.std).view(3, 1, 1) * 255
    assert float(levels.mean()) < 0.75 and float(levels.max()) <= 12


def test_a_torchvision_preset_reads_a_phone_sized_photo_within_jpeg_noise(tmp_path: Path) -> None:
    """resize 232, crop 224 (ResNet-50 V2's preset) on a 2400×1800 JPEG: the draft it reads gives the input of
    a full decode within a few levels."""
    from PIL import Image

    from cnnkit.io.decode import decode, draft_side
    from cnnkit.models.preprocess import Preprocess

    with Image.open(SAMPLES / "bus.jpg") as img:
        big = img.convert("RGB").resize((1800, 2400), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, (2400, 1800, 3))
    Image.fromarray((np.asarray(big, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8)).save(
        tmp_path / "big.jpg", quality=92
    )
    pre = Preprocess(resize=232, crop=224)
    drafted = decode(str(tmp_path / "big.jpg"), min_side=draft_side(pre.resize))
    assert drafted.drafted
    seen = pre(drafted.rgb, (drafted.width, drafted.height), drafted.scale)
    full = pre(decode(str(tmp_path / "big.jpg")).rgb)
    levels = (seen - full).abs() * torch.tensor(pre.std).view(3, 1, 1) * 255
    assert float(levels.mean()) < 0.5 and float(levels.max()) <= 8


def test_detection_reads_the_full_photo() -> None:
    from cnnkit.tasks.detect.predict import Detector

    assert Detector.load(device="cpu", backend="torch").min_side is None
