"""``cnnkit.api.finetune(task="instance")`` on tiny COCO-exported shapes: heads, freezing, checkpoints, resume."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cnnkit.cli import app


def _two_class_copy(src, dst):
    """The same images with only circles and squares annotated (a dataset with other classes)."""
    import shutil

    for split in ("train", "val"):
        shutil.copytree(src / split / "images", dst / split / "images")
        gt = json.loads((src / split / "annotations.json").read_text())
        gt["categories"] = [c for c in gt["categories"] if c["id"] in (1, 2)]
        gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] in (1, 2)]
        (dst / split / "annotations.json").write_text(json.dumps(gt))
    return dst


def test_finetune_replaces_heads_freezes_and_reloads(tiny_ckpt, coco_data, scene_folder, tmp_path):
    from cnnkit import api
    from cnnkit.models.checkpoint import read_meta

    data = _two_class_copy(coco_data, tmp_path / "two")
    out = tmp_path / "run"
    result = api.finetune(
        str(data),
        task="instance",
        weights=str(tiny_ckpt),
        epochs=1,
        batch_size=2,
        imgsz=64,
        freeze="backbone",
        out=str(out),
        progress=False,
    )
    assert set(result) == {"best", "last", "out", "metrics"}
    assert {"mask_AP50", "box_AP50"} <= set(result["metrics"])
    meta = read_meta(result["best"])
    assert meta["labels"] == ["circle", "square"] and meta["task"] == "instance"
    assert meta["args"]["freeze"] == "backbone"
    res = CliRunner().invoke(
        app, ["instance", str(scene_folder / "scene_0.png"), "--weights", result["best"], "--conf", "0", "-f", "jsonl"]
    )
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout.splitlines()[0])["predictions"]
    assert all(p["label"] in ("circle", "square") for p in preds)


def test_finetune_resumes_from_last(tiny_ckpt, coco_data, tmp_path):
    from cnnkit import api

    out = tmp_path / "run"
    first = api.finetune(
        str(coco_data),
        task="instance",
        weights=str(tiny_ckpt),
        epochs=1,
        batch_size=2,
        imgsz=64,
        out=str(out),
        progress=False,
    )
    assert first["metrics"]["step"] == 1
    second = api.finetune(
        str(coco_data),
        task="instance",
        weights=str(tiny_ckpt),
        epochs=2,
        batch_size=2,
        imgsz=64,
        resume=str(out / "last.pt"),
        progress=False,
    )
    import csv

    with open(out / "metrics.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(h["step"]) for h in history] == [1, 2] and "val_mask_AP50" in history[0]
    assert second["metrics"]["step"] == 2 and second["out"] == str(out)


def test_an_image_that_does_not_decode_is_named_and_left_out(tiny_ckpt, coco_data, tmp_path, caplog):
    """It crashed the run when the sampler reached it, without its name; classify and segment leave theirs out."""
    import logging
    import shutil

    from cnnkit import api

    data = tmp_path / "data"
    shutil.copytree(coco_data, data)
    bad = sorted((data / "train" / "images").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    logging.getLogger("cnnkit").addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        result = api.finetune(
            str(data),
            task="instance",
            weights=str(tiny_ckpt),
            epochs=1,
            batch_size=2,
            imgsz=64,
            out=str(tmp_path / "run"),
            progress=False,
        )
    assert f"left out of training: {bad}: truncated or corrupt image" in caplog.text
    assert result["metrics"]["step"] == 1 and (tmp_path / "run" / "best.safetensors").is_file()


def test_frozen_batch_norms_keep_statistics():
    from cnnkit.tasks.instance.train import _freeze
    from cnnkit.tasks.instance.zoo import light_maskrcnn
    from cnnkit.train.loop import train_mode

    model = light_maskrcnn(2, min_size=64, max_size=64)
    _freeze(model, "backbone")
    train_mode(model)
    assert not model.backbone.body.bn1.training and model.backbone.fpn.training and model.roi_heads.training
    assert not any(p.requires_grad for p in model.backbone.body.parameters())


def test_finetune_from_scratch(tiny_ckpt, coco_data, tmp_path):
    """``--no-pretrained``: the checkpoint's architecture with fresh random weights for DATA's classes."""
    import torch

    from cnnkit import api
    from cnnkit.models.checkpoint import load_state_dict

    result = api.finetune(
        str(coco_data),
        task="instance",
        weights=str(tiny_ckpt),
        pretrained=False,
        epochs=1,
        batch_size=2,
        imgsz=64,
        out=str(tmp_path / "run"),
        progress=False,
    )
    before, after = load_state_dict(tiny_ckpt), load_state_dict(result["last"])
    key = "backbone.body.conv1.weight"
    assert before[key].shape == after[key].shape and not torch.allclose(before[key], after[key], atol=1e-2)


def test_finetune_torchvision_architecture_from_scratch_offline(coco_data, tmp_path, monkeypatch):
    """``--no-pretrained`` with a torchvision model name builds it without touching the network."""
    from cnnkit import api
    from cnnkit.models import hub

    def no_download(*args, **kwargs):
        raise AssertionError("weights were requested")

    monkeypatch.setattr(hub, "torchvision_state_dict", no_download)
    calls = []
    monkeypatch.setattr("cnnkit.tasks.instance.train.fit", lambda net, *a, **k: calls.append(net) or [])
    result = api.finetune(
        str(coco_data),
        task="instance",
        model="maskrcnn_resnet50_fpn",
        pretrained=False,
        epochs=1,
        batch_size=2,
        out=str(tmp_path / "run"),
        progress=False,
    )
    assert calls and calls[0].roi_heads.box_predictor.cls_score.out_features == 6
    assert result["last"].endswith("last.safetensors")
