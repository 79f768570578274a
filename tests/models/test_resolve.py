"""The one model resolver: every kind of ``model``/``weights`` it accepts, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError, UsageError
from cnnkit.models import hub
from cnnkit.models.checkpoint import save_checkpoint
from cnnkit.models.loader import head_classes, identify, resolve, sniff
from cnnkit.models.registry import get_spec


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("a/b.safetensors", "checkpoint"),
        ("m.ONNX", "onnx"),
        ("m.torchscript", "torchscript"),
        ("m.pt", "pickle"),
        ("m.pth", "pickle"),
        ("resnet18", None),
        (None, None),
    ],
)
def test_sniff_reads_the_suffix_only(path, kind):
    assert sniff(path) == kind


def test_default_and_named_bundled_models():
    loaded = resolve("classify")
    assert loaded.name == "shapes-cnn" and loaded.runtime == "torch"
    assert "other" in loaded.labels and loaded.preprocess is not None
    assert resolve("segment").name == "shapes-unet"


def test_a_checkpoint_named_as_the_model_is_the_weights(tmp_path):
    src = resolve("classify")
    path = tmp_path / "mine.safetensors"
    meta = {
        "task": "classify",
        "arch": src.spec.family,
        "labels": src.labels,
        "name": "mine",
        "preprocess": src.preprocess.to_dict(),
    }
    save_checkpoint(path, src.module, meta)
    for loaded in (resolve("classify", str(path)), resolve("classify", None, str(path))):
        assert loaded.name == "mine" and loaded.labels == src.labels
        for a, b in zip(loaded.module.state_dict().values(), src.module.state_dict().values()):
            assert torch.equal(a, b)
    with pytest.raises(UsageError, match="a classify checkpoint, not segment"):
        resolve("segment", None, str(path))


def test_state_dict_with_another_head_gets_numbered_labels(tmp_path):
    spec = get_spec("shapes-cnn")
    path = tmp_path / "sd.pt"
    torch.save(spec.builder(num_classes=3).state_dict(), path)
    loaded = resolve("classify", "shapes-cnn", str(path))
    assert loaded.labels == ["class_0", "class_1", "class_2"]
    assert loaded.preprocess == spec.preprocess or loaded.preprocess is not None


def test_plain_safetensors_state_dict_loads_for_a_named_architecture(tmp_path):
    """A timm / Hugging Face ``model.safetensors`` (no cnnkit metadata) is a state dict, as a ``.pth`` is."""
    from safetensors.torch import save_file

    from cnnkit.viz.features import load_for_viewing

    spec = get_spec("shapes-cnn")
    module = spec.builder(num_classes=3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = resolve("classify", "shapes-cnn", str(path))
    assert loaded.labels == ["class_0", "class_1", "class_2"] and loaded.name == "shapes-cnn"
    for a, b in zip(loaded.module.state_dict().values(), module.state_dict().values()):
        assert torch.equal(a, b)
    assert load_for_viewing("shapes-cnn", str(path)).labels == loaded.labels  # features/filters too
    for model, weights in ((None, str(path)), (str(path), None)):  # without an architecture it cannot load
        with pytest.raises(CnnkitError, match="no cnnkit metadata.*architecture named as `model`"):
            resolve("classify", model, weights)


def _fake_download(monkeypatch, calls):
    """torchvision weights 'downloaded' as a random model of the right shape (nothing leaves the machine)."""

    def fake(name, enum_name, progress=False):
        calls.append(name)
        spec = get_spec(name)
        categories = list(hub.torchvision_weights(enum_name).meta["categories"])
        n = len(categories) - (1 if categories[0] == "__background__" and spec.task in ("detect", "instance") else 0)
        return spec.builder(num_classes=n).state_dict()

    monkeypatch.setattr(hub, "torchvision_state_dict", fake)


def test_torchvision_classifier_labels_and_preset_from_the_weight_enum(monkeypatch):
    calls: list[str] = []
    _fake_download(monkeypatch, calls)
    loaded = resolve("classify", "resnet18")
    assert calls == ["resnet18"]
    assert len(loaded.labels) == 1000 and loaded.labels[0] == "tench"
    assert (loaded.preprocess.resize, loaded.preprocess.crop) == (256, 224)


def test_torchvision_detector_drops_background_segmenter_keeps_it(monkeypatch):
    calls: list[str] = []
    _fake_download(monkeypatch, calls)
    det = resolve("detect", "fasterrcnn_mobilenet_v3_large_320_fpn")
    assert det.labels[0] == "person" and "__background__" not in det.labels and det.runtime == "torch"
    seg = resolve("segment", "lraspp_mobilenet_v3_large")
    assert seg.labels[0] == "__background__" and len(seg.labels) == 21
    assert seg.preprocess.resize == seg.preprocess.crop  # the whole image is labelled, no centre crop
    assert calls == ["fasterrcnn_mobilenet_v3_large_320_fpn", "lraspp_mobilenet_v3_large"]


def test_offline_download_is_a_clear_error(monkeypatch):
    from cnnkit.errors import WeightsNotAvailable

    def offline(name, enum_name, progress=False):
        raise WeightsNotAvailable(f"{name}: weights not cached and no network")

    monkeypatch.setattr(hub, "torchvision_state_dict", offline)
    with pytest.raises(WeightsNotAvailable, match="resnet18"):
        resolve("classify", "resnet18")


def test_bundled_yolo_resolves_to_an_ultralytics_model():
    loaded = resolve("detect")
    assert loaded.runtime == "ultralytics" and loaded.name == "shapes-yolov8n"
    assert loaded.meta["imgsz"] == 256 and loaded.labels[:2] == list(get_spec("shapes-yolov8n").labels)[:2]


def test_refusals():
    with pytest.raises(UsageError, match="did you mean"):
        resolve("classify", "shapes-cn")
    with pytest.raises(UsageError, match="backend 'tflite': expected auto, torch"):
        resolve("classify", backend="tflite")
    with pytest.raises(UsageError, match="arch"):
        resolve("classify", arch="unet")
    with pytest.raises(UsageError, match="encoder: names the backbone"):
        resolve("segment", encoder="resnet18")
    with pytest.raises(CnnkitError, match="no such file"):
        resolve("detect", "some/where/missing.pt")


def test_identify_without_loading(tmp_path):
    assert identify("resnet18")[:2] == ("classify", get_spec("resnet18"))
    assert identify("shapes-unet")[0] == "segment"
    assert identify("best.pt")[0] == "detect"
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(UsageError, match="task: needed"):
        identify(str(other))
    assert identify(str(other), "segment")[0] == "segment"
    ckpt = save_checkpoint(
        tmp_path / "cls.safetensors",
        get_spec("shapes-cnn").builder(num_classes=2),
        {"task": "classify", "arch": "shapes_cnn", "labels": ["a", "b"]},
    )
    assert identify(str(ckpt))[0] == identify(str(ckpt), "classify")[0] == "classify"
    with pytest.raises(
        UsageError, match="a classify checkpoint, not detect"
    ):  # export --task detect: was "unknown arch"
        identify(str(ckpt), "detect")


def test_head_classes_of_each_family():
    assert head_classes({"fc.weight": torch.zeros(7, 4)}) == 7
    assert head_classes({"roi_heads.box_predictor.cls_score.weight": torch.zeros(6, 4)}) == 5
    assert head_classes({"segmentation_head.0.weight": torch.zeros(3, 16, 3, 3), "x.weight": torch.zeros(2, 2)}) == 3
    assert head_classes({"bias": torch.zeros(3)}) is None
