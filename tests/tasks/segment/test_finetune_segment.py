"""Segmentation finetuning through ``cnnkit.api.finetune(task="segment")``: checkpoints, resume, reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnkit.cli import app
from tests.fixtures.segment import TINY

runner = CliRunner()


def test_joint_transforms_move_image_and_mask_together():
    from cnnkit.tasks.segment.train import PairDataset, transforms

    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[10:20, 5:30] = 255
    mask = (rgb[..., 0] > 0).astype(np.int64)
    ds = PairDataset(lambda i: (rgb, mask), 4, transforms(32, True, (0.0,) * 3, (1.0,) * 3))
    torch.manual_seed(0)
    checked = 0
    for i in range(4):
        image, target = ds[i]
        assert image.shape == (3, 32, 32) and target.shape == (32, 32) and target.dtype == torch.long
        grey, inside = image.mean(0), target.bool()
        if inside.any() and (~inside).any():
            assert grey[inside].mean() > grey[~inside].mean() + 0.5  # the bright box is where the mask is
            assert ((grey > 0.5) == inside).float().mean() > 0.9
            checked += 1
    assert checked


def test_finetune_api_writes_checkpoints_that_segment_loads(masks_data, tmp_path):
    from cnnkit import api

    out = tmp_path / "run"
    result = api.finetune(
        str(masks_data),
        task="segment",
        arch="unet",
        encoder=TINY["encoder"],
        epochs=1,
        batch_size=3,
        imgsz=64,
        out=str(out),
        progress=False,
    )
    assert result["out"] == str(out) and (out / "last.pt").is_file()
    assert 0.0 <= result["metrics"]["best_val_miou"] <= 1.0
    image = next((masks_data / "val" / "images").iterdir())
    res = runner.invoke(app, ["segment", str(image), "--weights", result["best"], "-f", "json"])
    assert res.exit_code == 0, res.output
    [rec] = json.loads(res.stdout)
    names = ["background", "circle", "square", "triangle", "star", "hexagon"]
    assert all(p["label"] == names[p["class_id"]] for p in rec["predictions"])

    again = api.finetune(
        str(masks_data),
        task="segment",
        arch="unet",
        encoder=TINY["encoder"],
        epochs=2,
        batch_size=3,
        imgsz=64,
        resume=str(out),
        progress=False,
    )
    assert again["metrics"]["last"]["epoch"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + epoch 1 (kept from the first run) + epoch 2


def test_resume_continues_the_run_as_it_was_started(masks_data, tmp_path, caplog):
    """Resume takes the run's recorded options (a batch size given again is named and not used: it used to
    change the steps per epoch and overrun the schedule); a folder with no run, a missing DATA and a finished
    run are one-line errors, and nothing is trained into them."""
    import logging

    from cnnkit import api
    from cnnkit.errors import OptionError, UsageError

    out = tmp_path / "run"
    common = dict(task="segment", arch="unet", encoder=TINY["encoder"], imgsz=64, progress=False)
    api.finetune(str(masks_data), epochs=1, batch_size=3, out=str(out), **common)
    logging.getLogger("cnnkit").addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        # no task: the run's own (before, classify, which failed on the recorded arch and encoder)
        again = api.finetune(None, epochs=2, batch_size=5, resume=str(out), progress=False)
    assert again["metrics"]["last"]["epoch"] == 2
    assert "not used: batch_size 5" in caplog.text and "stretched" in caplog.text
    assert json.loads((out / "last.json").read_text())["finetune"]["batch_size"] == 3
    with pytest.raises(UsageError, match="finished after epoch 2; nothing to resume"):
        api.finetune(None, resume=str(out), task="segment", progress=False)
    with pytest.raises(OptionError, match="is a segment run, not classify"):
        api.finetune(None, resume=str(out), task="classify", progress=False)
    with pytest.raises(OptionError, match="nothing to resume"):
        api.finetune(str(masks_data), resume=str(tmp_path / "typo"), task="segment", progress=False)
    assert not (tmp_path / "typo").exists()
    with pytest.raises(UsageError, match="DATA is required"):
        api.finetune(None, task="segment", progress=False)


@pytest.mark.parametrize("imgsz, expected", [(None, 192), (64, 64)])
def test_retraining_script_takes_the_registry_input_size_or_imgsz(tmp_path, monkeypatch, imgsz, expected):
    """``scripts/train_shapes_seg.py`` records the input size it trained at, as prediction will use it."""
    import runpy
    import sys

    from cnnkit.models.checkpoint import read_meta

    out = tmp_path / "run"
    argv = [
        "train_shapes_seg.py",
        "--arch",
        "deeplabv3plus",
        "--n-train",
        "8",
        "--train-size",
        "64",
        "--n-val",
        "2",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv + (["--imgsz", str(imgsz)] if imgsz else []))
    threads = torch.get_num_threads()  # the script sets its own
    try:
        runpy.run_path(
            str(Path(__file__).resolve().parents[3] / "scripts" / "train_shapes_seg.py"), run_name="__main__"
        )
    finally:
        torch.set_num_threads(threads)
    meta = read_meta(out / "best.safetensors")
    assert meta["preprocess"]["crop"] == meta["preprocess"]["resize"] == expected
    assert meta["arch_kwargs"] == {
        "arch": "deeplabv3plus",
        "encoder": "tu-tf_mobilenetv3_small_100",
        "decoder_channels": 96,
    }


def _train_tiny(data: Path, out: Path, caplog: Any, workers: int) -> dict[str, Any]:
    """One epoch of the tiny U-Net on ``data``, cnnkit's warnings caught in ``caplog``."""
    from cnnkit import api

    caplog.set_level("WARNING", logger="cnnkit")
    logger = __import__("logging").getLogger("cnnkit")
    logger.addHandler(caplog.handler)
    try:
        return api.finetune(
            str(data),
            task="segment",
            **{k: TINY[k] for k in ("arch", "encoder")},
            epochs=1,
            batch_size=2,
            imgsz=32,
            workers=workers,
            out=str(out),
            progress=False,
        )
    finally:
        logger.removeHandler(caplog.handler)


def test_bad_training_pairs_are_left_out_by_name_and_training_goes_on(tmp_path, caplog):
    """A mask with a value that is no class and an image that does not decode: each named in a warning and left
    out, with data loader workers too (a worker's error used to surface as a 60-line traceback)."""
    import shutil

    from PIL import Image

    from cnnkit.data.export import export_shapes

    data = tmp_path / "data"
    export_shapes(data, "masks", 8, seed=5, imgsz=64, val_fraction=0.25)
    masks = sorted((data / "train" / "masks").glob("*.png"))
    value = np.asarray(Image.open(masks[0])).copy()
    value[0, 0] = 9
    Image.fromarray(value).save(masks[0])
    broken = sorted((data / "train" / "images").iterdir())[1]
    broken.write_bytes(b"\x89PNG\r\n\x1a\nxx")
    result = _train_tiny(data, tmp_path / "run", caplog, workers=1)
    assert Path(result["best"]).is_file()
    assert f"left out of training: {masks[0]}: mask value 9 is not a class" in caplog.text
    assert f"left out of training: {broken}: not a readable image" in caplog.text
    shutil.rmtree(tmp_path / "run")


def test_a_cnnkit_error_in_a_data_loader_worker_comes_back_as_its_one_line():
    from torch.utils.data import DataLoader, Dataset

    from cnnkit.errors import CnnkitError

    class Broken(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            raise CnnkitError(f"x{i}.png: broken here")

    with pytest.raises(CnnkitError) as caught:
        list(DataLoader(Broken(), num_workers=1))
    assert str(caught.value) == "x0.png: broken here"


def test_a_flat_images_and_masks_folder_is_said_to_score_on_its_training_images(masks_data, tmp_path, caplog):
    """DATA/images + DATA/masks is both splits: the logged val mIoU was the training images', without a word."""
    import logging
    import shutil

    from cnnkit import api

    flat = tmp_path / "flat"
    for part in ("images", "masks"):
        shutil.copytree(masks_data / "train" / part, flat / part)
    shutil.copy(masks_data / "cnnkit-data.json", flat / "cnnkit-data.json")
    logging.getLogger("cnnkit").addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        api.finetune(
            str(flat), task="segment", arch="unet", encoder=TINY["encoder"], imgsz=64, epochs=1, batch_size=3,
            out=str(tmp_path / "run"), progress=False,
        )  # fmt: skip
    assert "no val split (train/ and val/); scoring on the training images" in caplog.text


def test_an_instance_dataset_with_one_annotations_file_is_said_to_score_on_its_training_images(tmp_path, caplog):
    import logging

    from cnnkit.data.coco import read_coco
    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.instance.train import _val_split

    export_shapes(tmp_path / "c", "coco", 4, seed=5, imgsz=64, val_fraction=0.0)
    flat = tmp_path / "c" / "train"
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        val = _val_split(str(flat), read_coco(flat, "train"))
    assert val.annotations == flat / "annotations.json"
    assert "no val split; evaluating on the training images" in caplog.text


def test_the_same_seed_trains_the_same_whatever_the_worker_count(masks_data, tmp_path):
    """Augmentation drew from each worker's own generator: --workers 0 and 2 gave other runs, and a resumed run
    (whose loader restarts the workers' seeds) another one still."""
    import csv

    from cnnkit import api

    common = dict(task="segment", arch="unet", encoder=TINY["encoder"], imgsz=64, epochs=1, batch_size=3)
    losses = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        api.finetune(str(masks_data), workers=workers, out=str(out), progress=False, seed=4, **common)
        losses.append([row["train_loss"] for row in csv.DictReader((out / "metrics.csv").open())])
    assert losses[0] == losses[1]


def test_a_truncated_jpeg_an_rgb_mask_and_a_resource_fork_leave_their_pairs_out(tmp_path, caplog):
    """Found on crafted datasets: a truncated JPEG's header reads, so it passed the check and ended training
    mid-epoch; an RGB mask ended the run before the check when the dataset names no classes (they are read
    from the masks); macOS's `._x.png` beside an image was "no mask" and ended the run. Each is left out, named."""
    from PIL import Image

    from cnnkit.data.export import export_shapes

    data = tmp_path / "data"
    export_shapes(data, "masks", 8, seed=5, imgsz=64, val_fraction=0.25)
    (data / "cnnkit-data.json").unlink()  # class names then come from the masks
    images = sorted((data / "train" / "images").glob("*.png"))
    jpeg = images[0].with_suffix(".jpg")
    Image.open(images[0]).convert("RGB").save(jpeg, quality=90)
    images[0].unlink()
    jpeg.write_bytes(jpeg.read_bytes()[:-200])  # its header intact
    rgb_mask = data / "train" / "masks" / f"{images[1].stem}.png"
    Image.open(rgb_mask).convert("RGB").save(rgb_mask)
    (data / "train" / "images" / f"._{images[2].name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    result = _train_tiny(data, tmp_path / "run", caplog, workers=0)
    assert Path(result["best"]).is_file()
    assert f"left out of training: {jpeg}: not a readable image (image file is truncated" in caplog.text
    assert f"left out of training: {rgb_mask}: mask must be a palette or greyscale PNG, not RGB" in caplog.text
    assert "._" not in caplog.text
