"""The bundled shapes segmenters on scenes from a seed training never saw.

The target of issue 5 is mIoU ≥ 0.85 (figures in ``cnnkit/weights/cards/``); both models
meet it on the same 200 scenes the model cards report.
"""

from __future__ import annotations

import pytest

UNSEEN_SEED = 321  # training uses seed 0, validation seed 1
N_SCENES = 200  # the model cards report the same 200 scenes


@pytest.fixture(scope="module")
def unseen_scenes():
    from cnnkit.data.shapes import scene

    return [scene(UNSEEN_SEED, i, size=256) for i in range(N_SCENES)]


MODELS = ["shapes-unet", "shapes-deeplabv3plus"]
_SCORES: dict[str, dict] = {}


def _scores(name: str, scenes) -> dict:
    """mIoU of a bundled model on the unseen scenes, computed once per model."""
    if name not in _SCORES:
        from cnnkit import api
        from cnnkit.tasks.segment.val import ConfusionMatrix

        seg = api.load("segment", model=name, device="cpu")
        cm = ConfusionMatrix(len(seg.labels))
        for (record, mask), sc in zip(seg.masks([s.image for s in scenes], batch_size=10), scenes):
            assert record.ok and mask.shape == sc.semantic.shape
            cm.update(mask, sc.semantic)
        _SCORES[name] = cm.scores(seg.labels)
    return _SCORES[name]


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_is_small_labelled_and_runs(name, unseen_scenes):
    from cnnkit.models import hub
    from cnnkit.models.checkpoint import read_meta

    path = hub.bundled_path(f"{name}.safetensors")
    assert path.stat().st_size < 8_000_000
    meta = read_meta(path)
    assert meta["labels"][0] == "background" and len(meta["labels"]) == 6
    scores = _scores(name, unseen_scenes)
    assert scores["per_class_iou"]["background"] > 0.9  # shapes are separated from the background


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_miou_on_unseen_seed(name, unseen_scenes):
    scores = _scores(name, unseen_scenes)
    assert scores["miou"] >= 0.85, scores


def test_legacy_timm_encoder_names_map_to_their_timm_universal_twins():
    from cnnkit.tasks.segment.zoo import encoder_name

    assert encoder_name("timm-mobilenetv3_small_100") == "tu-tf_mobilenetv3_small_100"
    assert encoder_name("timm-regnetx_002") == "tu-regnetx_002"
    assert encoder_name("timm-efficientnet-b0") == "timm-efficientnet-b0"  # smp's own implementation
    assert encoder_name("mobilenet_v2") == "mobilenet_v2"


@pytest.mark.parametrize("name", MODELS)
def test_bundled_checkpoints_load_without_smp_deprecation(name):
    """Older checkpoints name ``timm-mobilenetv3_small_100`` (smp would warn and remap it on its own),
    newer ones its ``tu-`` twin; both load without a deprecation warning."""
    import warnings

    from cnnkit.models.loader import resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = resolve("segment", name, None, default="shapes-unet")
    assert loaded.meta["arch_kwargs"]["encoder"] in ("timm-mobilenetv3_small_100", "tu-tf_mobilenetv3_small_100")
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]
