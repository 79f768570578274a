"""``classes`` inside the segment and instance predictors (records, masks and pictures agree), and
``imgsz`` for classify (the preprocessing rescaled by the one rule finetune and export use)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import OptionError
from tests.conftest import SAMPLES
from tests.fixtures.segment import save_tiny_unet

runner = CliRunner()
TRIANGLE = str(SAMPLES / "shape_0_triangle.png")


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory):
    """A random 6-class U-Net whose seed-1 weights give every image several classes."""
    return save_tiny_unet(tmp_path_factory.mktemp("seg") / "tiny.safetensors", seed=1)


def test_segment_classes_filter_records_masks_and_overlays(seg_ckpt, masks_data, tmp_path):
    import cnnkit

    images = sorted(str(p) for p in (masks_data / "val" / "images").glob("*.png"))
    every = cnnkit.segment(images, weights=str(seg_ckpt), threads=1)
    found = {p["label"] for r in every for p in r.predictions}
    assert len(found) >= 2, found  # the filter below has something to drop
    keep = sorted(found - {"background"})[0]
    kept = cnnkit.segment(images, weights=str(seg_ckpt), threads=1, classes=[keep], save_dir=tmp_path / "api")
    for before, after in zip(every, kept):
        assert [p["label"] for p in after.predictions] == [p["label"] for p in before.predictions if p["label"] == keep]
        mask = np.asarray(Image.open(after.extra["mask"]))
        kept_id = after.result.labels.index(keep)
        assert set(np.unique(mask)) <= {0, kept_id}
        assert int((mask == kept_id).sum()) == next((p["pixels"] for p in after.predictions), 0)
    res = runner.invoke(
        app,
        [
            "segment",
            *images,
            "--weights",
            str(seg_ckpt),
            "-f",
            "json",
            "--threads",
            "1",
            "--classes",
            keep,
            "--save-dir",
            str(tmp_path / "cli"),
        ],
    )
    assert res.exit_code == 0, res.output
    for rec in json.loads(res.stdout):
        assert {p["label"] for p in rec["predictions"]} <= {keep}
        assert set(np.unique(np.asarray(Image.open(rec["mask"])))) <= {0, kept_id}


def test_segment_unknown_class_names_the_option(seg_ckpt, masks_data):
    import cnnkit

    image = str(next((masks_data / "val" / "images").glob("*.png")))
    with pytest.raises(OptionError) as err:
        cnnkit.segment(image, weights=str(seg_ckpt), classes=["unicorn"])
    assert str(err.value).startswith("classes 'unicorn': not a class of this model")
    res = runner.invoke(app, ["segment", image, "--weights", str(seg_ckpt), "--classes", "unicorn"])
    assert res.exit_code == 2 and "Error: --classes unicorn: not a class of this model" in res.stderr


def test_instance_classes_filter_records_and_saved_masks(tiny_ckpt, scene_folder, tmp_path):
    """--classes keeps the best --max-det of those classes, as ultralytics filters classes before max_det."""
    import cnnkit

    every = cnnkit.instance(str(scene_folder), weights=str(tiny_ckpt), conf=0.0, max_det=1000, threads=1)
    labels = [p["label"] for r in every for p in r.predictions]
    assert len(set(labels)) >= 2, labels
    keep = max(set(labels), key=labels.count)
    kept = cnnkit.instance(
        str(scene_folder),
        weights=str(tiny_ckpt),
        conf=0.0,
        max_det=20,
        threads=1,
        classes=[keep],
        save_dir=tmp_path / "api",
        save_masks=True,
    )
    for before, after in zip(every, kept):
        mine = [p["score"] for p in before.predictions if p["label"] == keep][:20]
        assert [p["score"] for p in after.predictions] == mine
        assert len(after.result.items) == len(after.predictions)  # what the picture draws
    saved = [p["mask_file"] for r in kept for p in r.predictions]
    assert len(saved) == sum(len(r.predictions) for r in kept) == len(list((tmp_path / "api" / "masks").glob("*.png")))


def test_classify_imgsz_rescales_the_preprocessing(tmp_path):
    import cnnkit
    from cnnkit.io.decode import draft_side
    from cnnkit.models.preprocess import Preprocess

    pre = Preprocess(resize=256, crop=224)
    assert pre.at_size(None) is pre and pre.at_size(224) is pre
    assert (pre.at_size(112).resize, pre.at_size(112).crop) == (128, 112)
    assert Preprocess(resize=64, crop=64).at_size(96) == Preprocess(resize=96, crop=96)

    predictor = cnnkit.load("classify", model="shapes-cnn", imgsz=96, threads=1)
    assert predictor.pre.crop == 96 and predictor.min_side == draft_side(predictor.pre.resize)
    (record,) = predictor([TRIANGLE])
    assert record.ok and record.predictions
    with pytest.raises(OptionError) as err:
        cnnkit.load("classify", model="lenet5", imgsz=64)
    assert str(err.value) == "imgsz 64: lenet5 only takes 32x32 inputs"
    res = runner.invoke(app, ["classify", TRIANGLE, "-m", "lenet5", "--imgsz", "64"])
    assert res.exit_code == 2 and "--imgsz 64: lenet5 only takes 32x32 inputs" in res.stderr
    res = runner.invoke(
        app, ["classify", TRIANGLE, "-m", "shapes-cnn", "--imgsz", "96", "-f", "json", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["predictions"][0]["label"] == record.predictions[0]["label"]


def test_a_large_imgsz_is_checked_without_running_the_network_at_it():
    """The load-time size check ran the classifier once at `imgsz`: at 8192 px that held 24 GB of activations
    (the OOM killer's), before any batch. Shapes are checked with fake tensors above 512 px."""
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("reads the peak memory from /proc (Linux)")
    script = (  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
        "import cnnkit\n"
        "cnnkit.load('classify', imgsz=4096, backend='torch')\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 1_500_000, done.stdout  # KiB; a real pass at 4096 px holds several GB
