"""The bundled ``shapes-maskrcnn``: size, metadata, and mask AP50 ≥ 0.80 on scenes training never saw."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app

UNSEEN_SEED = 777  # training uses seed 0, its validation seed 1


def test_bundled_weights_are_small_fp16_with_labels():
    from safetensors import safe_open

    from cnnkit.data.shapes import CLASSES
    from cnnkit.models.checkpoint import read_meta
    from cnnkit.models.hub import bundled_path

    path = bundled_path("shapes-maskrcnn.safetensors")
    assert path.stat().st_size <= 25e6
    meta = read_meta(path)
    assert meta["labels"] == list(CLASSES) and meta["arch"] == "maskrcnn_light"
    with safe_open(str(path), framework="pt") as f:
        key = "roi_heads.mask_predictor.mask_fcn_logits.weight"
        assert str(f.get_tensor(key).dtype) == "torch.float16"


def test_bundled_mask_ap50_on_unseen_scenes():
    from cnnkit.data.shapes import CLASSES, scene
    from cnnkit.models.loader import resolve
    from cnnkit.tasks.instance.data import scenes_to_coco
    from cnnkit.tasks.instance.train import evaluate_model

    loaded = resolve("instance", "shapes-maskrcnn")
    size = loaded.meta["arch_kwargs"]["min_size"]
    scenes = [scene(UNSEEN_SEED, i, size=size) for i in range(20)]
    metrics = evaluate_model(loaded.module, [s.image for s in scenes], scenes_to_coco(scenes, CLASSES), CLASSES)
    assert metrics["mask_AP50"] >= 0.80, metrics
    assert metrics["box_AP50"] >= 0.80, metrics


def test_default_model_finds_the_shapes(tmp_path):
    """The CLI's default model outlines a real object of the scene: right label, mask IoU ≥ 0.5."""
    from cnnkit.data.shapes import scene
    from cnnkit.tasks.instance.post import decode_rle

    sc = scene(UNSEEN_SEED, 100, size=192)
    path = tmp_path / "scene.png"
    Image.fromarray(sc.image).save(path)
    res = CliRunner().invoke(app, ["instance", str(path), "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.splitlines()[0])
    assert rec["model"] == "shapes-maskrcnn" and rec["predictions"]
    best = 0.0
    for p in rec["predictions"]:
        mask = decode_rle(p["mask"])
        for obj in sc.objects:
            if obj.label == p["label"]:
                best = max(best, (mask & obj.mask).sum() / (mask | obj.mask).sum())
    assert best >= 0.5
