"""``cnnkit segment``: records, masks and overlays, tiling, model resolution, offline errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import validate_record

runner = CliRunner()


def _failed_with(res, kind, exit_code: int) -> str:
    """The error text of a failed run. cnnkit's errors derive from click's ClickException,
    which typer's own click copy may not catch: then the exception itself is the evidence."""
    assert res.exit_code != 0
    assert res.exit_code == exit_code or isinstance(res.exception, kind), (res.exit_code, res.exception)
    return res.output + str(res.exception or "")


def _val_images(data):
    return sorted((data / "val" / "images").iterdir())


def test_tile_starts_cover_the_image_and_end_at_the_edge():
    from cnnkit.tasks.segment.predict import tile_starts

    for size, tile, stride in [(300, 64, 48), (64, 64, 48), (40, 64, 48), (1000, 256, 192)]:
        starts = tile_starts(size, min(tile, size), stride)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + min(tile, size)] = True
        assert covered.all() and starts[-1] + min(tile, size) == size


def test_class_summary_counts_every_pixel():
    from cnnkit.tasks.segment.predict import class_summary

    mask = np.zeros((10, 20), np.uint8)
    mask[:5, :4] = 3
    preds = class_summary(mask, ["bg", "a", "b", "c"])
    assert [p["class_id"] for p in preds] == [0, 3]
    assert sum(p["pixels"] for p in preds) == mask.size
    assert preds[1] == {"label": "c", "class_id": 3, "pixels": 20, "fraction": 0.1}


def _colour_model_loaded():
    """A 1×1 conv whose class is 1 exactly where the red channel is above 0.5: tiling must not change it."""
    import torch

    from cnnkit.models.loader import Loaded
    from cnnkit.models.preprocess import Preprocess

    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1, 0] = 10.0  # red, normalised with mean 0.5 → logit > 0 above 0.5
    pre = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return Loaded(conv, "colour", ["background", "red"], pre, None, {})


def test_tiling_with_overlap_matches_the_per_pixel_answer():
    from cnnkit.device import Runtime
    from cnnkit.tasks.segment.predict import Segmenter

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(rng.random((150, 230)) < 0.5, 40, 220)
    seg = Segmenter(_colour_model_loaded(), Runtime.create("cpu"), imgsz=64, tile=64, overlap=0.25)
    [(record, mask)] = list(seg.masks([rgb], batch_size=3))
    assert mask.shape == (150, 230)
    np.testing.assert_array_equal(mask, (rgb[..., 0] > 128).astype(np.uint8))
    assert sum(p["pixels"] for p in record.predictions) == 150 * 230


def test_predict_saves_palette_mask_and_overlay_of_input_size(masks_data, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "segment",
            str(masks_data / "val" / "images"),
            "--weights",
            str(tiny_checkpoint),
            "--format",
            "jsonl",
            "--save-dir",
            str(out),
            "--batch-size",
            "2",
            "--imgsz",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 2
    for rec in records:
        validate_record(rec)
        assert rec["task"] == "segment" and rec["model"] == "tiny-unet"
        assert sum(p["pixels"] for p in rec["predictions"]) == rec["width"] * rec["height"]
        assert abs(sum(p["fraction"] for p in rec["predictions"]) - 1) < 1e-4
        mask = Image.open(rec["mask"])
        assert mask.mode == "P" and mask.size == (rec["width"], rec["height"])
        assert np.asarray(mask).max() < 6
        labels = {p["class_id"]: p["label"] for p in rec["predictions"]}
        assert set(np.unique(np.asarray(mask)).tolist()) == set(labels)
        assert Image.open(rec["overlay"]).size == (rec["width"], rec["height"])


def test_save_writes_into_a_new_run_folder(tiny_checkpoint, rgb_image, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        res = runner.invoke(app, ["segment", str(rgb_image), "--weights", str(tiny_checkpoint), "--save", "-f", "json"])
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "runs" / "segment").iterdir()) == ["exp", "exp2"]
    assert len(list((tmp_path / "runs" / "segment" / "exp2").glob("rgb-*_mask.png"))) == 1


def test_tile_option_on_a_large_image_keeps_the_input_size(tiny_checkpoint, tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 300, 3), dtype=np.uint8)).save(path)
    res = runner.invoke(
        app,
        [
            "segment",
            str(path),
            "--weights",
            str(tiny_checkpoint),
            "--tile",
            "64",
            "--overlap",
            "0.5",
            "--imgsz",
            "64",
            "-f",
            "json",
            "--save-dir",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    assert Image.open(rec["mask"]).size == (300, 120)


def test_api_segment_accepts_arrays(tiny_checkpoint):
    import cnnkit

    rgb = np.random.default_rng(2).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    [rec] = cnnkit.segment([rgb], weights=str(tiny_checkpoint))
    assert rec.ok and (rec.width, rec.height) == (70, 50)
    assert sum(p["pixels"] for p in rec.predictions) == 70 * 50


def test_smp_arch_with_any_encoder_runs_random_init(rgb_image):
    res = runner.invoke(
        app,
        [
            "segment",
            str(rgb_image),
            "--arch",
            "deeplabv3plus",
            "--encoder",
            "timm-mobilenetv3_small_100",
            "--imgsz",
            "64",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    assert rec["model"] == "deeplabv3plus-timm-mobilenetv3_small_100"


@pytest.mark.parametrize(
    "args",
    [
        ["--encoder", "resnet18"],
        ["--arch", "segformer"],
        ["--arch", "unet", "--model", "shapes-unet"],
        ["--overlap", "0.95"],
        ["--half", "--device", "cpu"],
    ],
)
def test_bad_model_options_are_usage_errors(rgb_image, args):
    from cnnkit.errors import UsageError

    res = runner.invoke(app, ["segment", str(rgb_image), *args])
    _failed_with(res, UsageError, 2)


def test_torchvision_voc_model_offline_names_cache_and_weights_option(rgb_image):
    from cnnkit.errors import WeightsNotAvailable

    res = runner.invoke(app, ["segment", str(rgb_image), "--arch", "lraspp"])
    text = _failed_with(res, WeightsNotAvailable, 1)
    assert "lraspp_mobilenet_v3_large" in text and "--weights" in text


def test_torchvision_model_with_local_state_dict_has_voc_categories(rgb_image, tmp_path):
    import torch

    from cnnkit.tasks.segment.zoo import build_torchvision

    path = tmp_path / "lraspp.pth"
    torch.save(build_torchvision("lraspp_mobilenet_v3_large").state_dict(), path)
    res = runner.invoke(
        app,
        [
            "segment",
            str(rgb_image),
            "--model",
            "lraspp_mobilenet_v3_large",
            "--weights",
            str(path),
            "--imgsz",
            "64",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    from torchvision.models import get_weight

    voc = get_weight("LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1").meta["categories"]
    assert all(p["label"] == voc[p["class_id"]] for p in rec["predictions"])


def test_bad_input_becomes_a_failed_record(tiny_checkpoint, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    res = runner.invoke(app, ["segment", str(bad), "--weights", str(tiny_checkpoint), "-f", "json"])
    assert res.exit_code == 1
    [rec] = json.loads(res.stdout)
    assert rec["error"] and rec["predictions"] == []


def test_subprocess_entry_point(masks_data, tiny_checkpoint):
    image = _val_images(masks_data)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "segment", str(image), "--weights", str(tiny_checkpoint), "-f", "jsonl"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["path"] == str(image) and rec["predictions"]


def test_every_segment_registry_entry_builds_and_lists():
    from cnnkit.models.describe import parameters
    from cnnkit.models.registry import list_models

    specs = list_models(task="segment")
    names = {s.name for s in specs}
    assert {
        "shapes-unet",
        "shapes-deeplabv3plus",
        "unet",
        "unetplusplus",
        "deeplabv3plus",
        "deeplabv3_resnet50",
        "deeplabv3_mobilenet_v3_large",
        "lraspp_mobilenet_v3_large",
    } <= names
    assert all(parameters(s) > 0 for s in specs)


def test_torchvision_segmenter_sees_what_its_weights_transforms_make(tmp_path):
    """DeepLabV3/LR-ASPP get the image as their weights' transforms() make it: the short side to the preset's
    size, the long one truncated, nothing padded (a pad to 32 reached DeepLabV3's image pooling and moved a
    quarter of the bus photo's pixels to other classes); images of other shapes go through apart."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.models import get_weight

    import cnnkit
    from cnnkit.io.decode import decode
    from cnnkit.tasks.segment.zoo import build_torchvision

    path = tmp_path / "lraspp.pth"
    torch.save(build_torchvision("lraspp_mobilenet_v3_large").state_dict(), path)
    segmenter = cnnkit.load("segment", model="lraspp_mobilenet_v3_large", weights=str(path), imgsz=64, backend="torch")
    transforms = get_weight("LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1").transforms(resize_size=64)
    paths = []
    for w, h in [(150, 90), (90, 151), (64, 64)]:
        rgb = np.random.default_rng(w).integers(0, 255, (h, w, 3), dtype=np.uint8)
        paths.append(tmp_path / f"{w}x{h}.png")
        Image.fromarray(rgb).save(paths[-1])
        ours = segmenter.preprocess(decode(str(paths[-1])))
        theirs = transforms(Image.fromarray(rgb))
        assert ours.tensor.shape == theirs.shape and float((ours.tensor - theirs).abs().max()) < 1e-5
    records = segmenter([str(p) for p in paths], batch_size=3)
    assert [r.result.mask.shape for r in records] == [(90, 150), (151, 90), (64, 64)]
    thin = tmp_path / "thin.png"  # past 4:1 the short side's rule would make it 64 × 48,000: letterboxed instead
    Image.fromarray(np.zeros((4, 3000, 3), np.uint8)).save(thin)
    assert max(segmenter.preprocess(decode(str(thin))).tensor.shape) <= 64
