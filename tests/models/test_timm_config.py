"""A timm state dict published the Hugging Face way (``model.safetensors`` + ``config.json``) runs with timm's
own eval preprocessing and class names, not the registry entry's torchvision preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

CFG = {
    "input_size": [3, 160, 160],
    "crop_pct": 0.95,
    "crop_mode": "center",
    "interpolation": "bicubic",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
NAMES = [f"kind {i}" for i in range(10)]


def _published(folder: Path, config: dict | None) -> Path:
    import torchvision
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


def test_timms_config_gives_its_preprocessing_and_names(tmp_path: Path) -> None:
    import timm.data
    from PIL import Image

    from cnnkit.models.loader import resolve

    weights = _published(tmp_path / "hub", {"architecture": "resnet18", "pretrained_cfg": CFG, "label_names": NAMES})
    loaded = resolve("classify", "resnet18", str(weights), backend="torch")
    assert loaded.labels == NAMES
    assert (loaded.preprocess.resize, loaded.preprocess.crop, loaded.preprocess.interpolation) == (168, 160, "bicubic")
    rgb = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=CFG))(Image.fromarray(rgb))
    assert torch.allclose(loaded.preprocess(rgb), theirs, atol=1e-5)


def test_without_a_config_the_entrys_preset_is_used_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cnnkit.models.loader import resolve

    weights = _published(tmp_path / "plain", None)
    with caplog.at_level("INFO", logger="cnnkit"):
        loaded = resolve("classify", "resnet18", str(weights), backend="torch")
    assert (loaded.preprocess.resize, loaded.preprocess.crop) == (256, 224)
    assert "records no preprocessing" in caplog.text


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"pretrained_cfg": {**CFG, "input_size": [3, 160, 200]}}, "is not [3, S, S]"),
        ({"pretrained_cfg": {**CFG, "crop_mode": "squash"}}, "crop_mode 'squash'"),
        ({"pretrained_cfg": CFG, "label_names": ["a\x1b[2Jb"] * 10}, "control characters"),
    ],
)
def test_a_config_cnnkit_cannot_follow_is_one_line(tmp_path: Path, config: dict, reason: str) -> None:
    from cnnkit.errors import CnnkitError
    from cnnkit.models.loader import resolve

    weights = _published(tmp_path / "odd", config)
    with pytest.raises(CnnkitError, match="config.json") as err:
        resolve("classify", "resnet18", str(weights), backend="torch")
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_timms_synset_names_read_as_their_descriptions(tmp_path: Path) -> None:
    from cnnkit.models.loader import resolve

    synsets = [f"n0000000{i}" for i in range(10)]
    config = {
        "pretrained_cfg": CFG,
        "label_names": {str(i): s for i, s in enumerate(synsets)},
        "label_descriptions": {s: f"thing {i}, Thingus {i}" for i, s in enumerate(synsets)},
    }
    weights = _published(tmp_path / "synsets", config)
    assert resolve("classify", "resnet18", str(weights), backend="torch").labels == [f"thing {i}" for i in range(10)]
