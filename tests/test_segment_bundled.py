"""The bundled shapes segmenters reach mIoU ≥ 0.85 on scenes from a seed training never saw."""

from __future__ import annotations

import pytest

UNSEEN_SEED = 321  # training uses seed 0, validation seed 1
N_SCENES = 20


@pytest.fixture(scope="module")
def unseen_scenes():
    from cnnkit.data.shapes import scene

    return [scene(UNSEEN_SEED, i, size=256) for i in range(N_SCENES)]


@pytest.mark.parametrize("name", ["shapes-unet", "shapes-deeplabv3plus"])
def test_bundled_model_miou_on_unseen_seed(name, unseen_scenes):
    from cnnkit import api
    from cnnkit.eval.segment import ConfusionMatrix
    from cnnkit.models import hub
    from cnnkit.models.checkpoint import read_meta

    path = hub.bundled_path(f"{name}.safetensors")
    assert path.stat().st_size < 8_000_000
    assert read_meta(path)["labels"][0] == "background"
    seg = api.load("segment", model=name, device="cpu")
    cm = ConfusionMatrix(len(seg.labels))
    for (record, _, mask), sc in zip(seg.masks([s.image for s in unseen_scenes], batch_size=10), unseen_scenes):
        assert record.ok
        cm.update(mask, sc.semantic)
    scores = cm.scores(seg.labels)
    assert scores["miou"] >= 0.85, scores
