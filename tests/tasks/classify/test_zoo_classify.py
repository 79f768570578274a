"""Every classification architecture in the registry builds offline and runs (issue 8)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import WeightsNotAvailable
from cnnkit.models import hub
from cnnkit.models.describe import describe
from cnnkit.models.loader import resolve
from cnnkit.models.registry import count_parameters, list_models
from tests.fixtures.finetune import random_model

CLASSIFIERS = [s.name for s in list_models(task="classify")]
CHAPTER = ["lenet5", "alexnet", "vgg16", "googlenet", "resnet50", "efficientnet_b0", "vit_b_16"]


def test_chapter_architectures_are_registered():
    assert set(CHAPTER) <= set(CLASSIFIERS)
    assert {"resnet18", "resnet34", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2"} <= set(CLASSIFIERS)


def _marks(name: str) -> list:
    """Models over 60M parameters are marked ``slow`` (still run in CI; ``-m 'not slow'`` skips them)."""
    from cnnkit.models.describe import parameters
    from cnnkit.models.registry import get_spec

    return [pytest.mark.slow] if parameters(get_spec(name)) > 60_000_000 else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CLASSIFIERS])
def test_every_classifier_builds_with_random_weights_and_runs(name):
    from cnnkit.models.registry import get_spec

    spec = get_spec(name)
    torch.manual_seed(0)
    model = random_model(spec, 7).eval()
    size = spec.meta.get("fixed_size") or (spec.preprocess.crop if spec.preprocess else 64)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


def test_models_table_reports_year_parameters_top1_and_availability():
    result = CliRunner().invoke(app, ["models", "--task", "classify", "--format", "json", "vi*"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    vit = rows["vit_b_16"]
    assert vit["year"] == 2020 and vit["available"] is False
    assert vit["parameters"] > 80_000_000
    assert (
        vit["imagenet_top1"]
        == hub.torchvision_weights("ViT_B_16_Weights.IMAGENET1K_V1").meta["_metrics"]["ImageNet-1K"]["acc@1"]
    )


def test_parameter_counts_come_from_the_built_model():
    for name in ("lenet5", "googlenet"):
        from cnnkit.models.registry import get_spec

        spec = get_spec(name)
        n = len(spec.labels) if spec.labels else 1000
        assert describe(spec)["parameters"] == count_parameters(spec.builder(num_classes=n))
    assert describe(get_spec("lenet5"))["available"] is True


def test_torchvision_weights_offline_give_a_clear_error():
    with pytest.raises(WeightsNotAvailable, match="alexnet.*`weights` PATH"):
        resolve("classify", "alexnet", None, default="alexnet")


def test_cached_torchvision_weights_load_offline(monkeypatch):
    """A file in torch hub's cache (as a download leaves it) loads strictly, aux heads included."""
    from cnnkit.models.registry import get_spec

    spec = get_spec("googlenet")
    weights = hub.torchvision_weights(spec.weights)
    cached = hub.torchvision_cache_file(weights)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(spec.builder(num_classes=1000).state_dict(), cached)
    loaded = resolve("classify", "googlenet", None, default="googlenet")
    assert len(loaded.labels) == 1000 and loaded.labels[0] == weights.meta["categories"][0]
    assert loaded.preprocess.crop == 224
