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


@pytest.mark.parametrize("size", [(1800, 2400), (1801, 2403)])
def test_a_torchvision_preset_reads_a_phone_sized_photo_within_jpeg_noise(tmp_path: Path, size: tuple) -> None:
    """resize 232, crop 224 (ResNet-50 V2's preset) on a 2400×1800 JPEG: the draft it reads gives the input of
    a full decode within a few levels, also where the draft's last row and column are partial."""
    from PIL import Image

    from cnnkit.io.decode import decode, draft_side
    from cnnkit.models.preprocess import Preprocess

    with Image.open(SAMPLES / "bus.jpg") as img:
        big = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, (size[1], size[0], 3))
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


@pytest.mark.parametrize(("size", "orientation"), [((3023, 2263), 3), ((3023, 2263), 6), ((3024, 2264), 8)])
def test_an_exif_turned_photo_is_read_on_its_own_geometry(tmp_path: Path, size: tuple[int, int], orientation: int):
    """A draft's last row and column are partial; a turn or flip moved them to the top or left, and a crop read
    from the draft was off by up to s - 1 pixels (26 levels). Sides the draft factor does not divide are now
    decoded in full when turned."""
    from PIL import Image

    from cnnkit.io.decode import decode, draft_side
    from cnnkit.models.preprocess import Preprocess

    with Image.open(SAMPLES / "bus.jpg") as img:
        big = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, (size[1], size[0], 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.jpg"
    Image.fromarray((np.asarray(big, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8)).save(
        path, quality=92, exif=exif
    )
    pre = Preprocess(resize=232, crop=224)
    drafted = decode(str(path), min_side=draft_side(pre.resize))
    assert drafted.drafted == (size[0] % 2 == 0)
    seen = pre(drafted.rgb, (drafted.width, drafted.height), drafted.scale)
    full = pre(decode(str(path)).rgb)
    levels = (seen - full).abs() * torch.tensor(pre.std).view(3, 1, 1) * 255
    assert float(levels.mean()) < 0.5 and float(levels.max()) <= 8


def test_finetune_scores_val_on_the_input_classify_will_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its val decode drafted without the margin, so `val_acc` and the choice of `best` saw other pixels
    (up to 17 levels off) than `cnnkit classify` on the same files."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from cnnkit.io.decode import draft_side
    from cnnkit.tasks.classify import train

    runner = CliRunner()
    data = tmp_path / "shapes"
    made = runner.invoke(app, ["data", "shapes", str(data), "--layout", "imagefolder", "--n", "20", "--imgsz", "64"])
    assert made.exit_code == 0, made.output
    sides: list = []
    real_init = train.FolderDataset.__init__

    def recording(self, split, transform, min_side, seed):
        sides.append((type(transform).__name__, min_side))
        real_init(self, split, transform, min_side, seed)

    monkeypatch.setattr(train.FolderDataset, "__init__", recording)
    done = runner.invoke(
        app,
        ["finetune", str(data), "--model", "shapes-cnn", "--epochs", "1", "--workers", "0"]
        + ["--save-dir", str(tmp_path / "run")],
    )
    assert done.exit_code == 0, done.output
    assert ("Preprocess", draft_side(64)) in sides and all(side == draft_side(64) for _, side in sides)
