"""Pretrained weights without the network: offline errors, the torch hub cache, local files, safe loading."""

from __future__ import annotations

import json
import os
import pickle
import urllib.error
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError, UnsafeCheckpoint, WeightsNotAvailable
from cnnkit.models import hub
from cnnkit.models.checkpoint import load_state_dict
from cnnkit.models.loader import resolve

runner = CliRunner()
MODEL = "mobilenet_v3_small"
ENUM = "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def _random_state():
    import torchvision

    return torchvision.models.mobilenet_v3_small(weights=None).state_dict()


def test_offline_and_not_cached_is_a_clear_error(monkeypatch):
    import torch

    def fail(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    with pytest.raises(WeightsNotAvailable) as info:
        resolve("classify", MODEL, None, default="shapes-cnn")
    text = str(info.value)
    assert MODEL in text and "`weights` PATH" in text and "--" not in text  # the CLI adds flags
    assert str(hub.torch_hub_dir() / "checkpoints") in text
    assert "\n" not in text


def test_real_download_attempt_fails_cleanly_with_sockets_blocked(rgb_image):
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", MODEL])
    assert result.exit_code == 1
    assert "not in the cache" in result.stderr and "--weights" in result.stderr


def test_a_failed_download_is_one_line_without_the_downloading_notice(monkeypatch, rgb_image):
    """torch.hub says `Downloading: …` before it fails: offline, that line came before the one-line error."""
    import sys

    import torch

    def fail(url, model_dir=None, **kwargs):
        sys.stdout.write(f'Downloading: "{url}" to {model_dir}\n')
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", MODEL])
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "not in the cache" in lines[0], lines


def test_download_is_used_when_online(monkeypatch, rgb_image):
    import torch

    calls = []

    def fake_download(url, model_dir=None, **kwargs):
        calls.append((url, model_dir))
        return _random_state()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    loaded = resolve("classify", MODEL, None, default="shapes-cnn")
    assert calls and calls[0][0].endswith(".pth")
    assert Path(calls[0][1]) == hub.torch_hub_dir() / "checkpoints"
    assert len(loaded.labels) == 1000 and loaded.labels[0] == "tench"
    assert loaded.preprocess.crop == 224


def test_the_download_notice_goes_to_stderr_not_into_the_records(monkeypatch, rgb_image):
    import sys

    import torch

    def download(url, model_dir=None, **kwargs):  # torch.hub writes this line with sys.stdout.write
        sys.stdout.write(f'Downloading: "{url}" to {model_dir}\n')
        return _random_state()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", MODEL, "-f", "jsonl", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["model"] for line in result.stdout.splitlines()] == [MODEL]
    assert "Downloading:" in result.stderr


def test_weights_found_in_torch_hub_cache(rgb_image):
    import torch

    cache = hub.torchvision_cache_file(hub.torchvision_weights(ENUM))
    cache.parent.mkdir(parents=True)
    torch.save(_random_state(), cache)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", MODEL, "-f", "json", "-k", "3"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)[0]
    assert rec["model"] == MODEL and len(rec["predictions"]) == 3
    info = json.loads(runner.invoke(app, ["info", "-f", "json"]).stdout)
    assert MODEL in info["cached_pretrained"]


@pytest.mark.parametrize("content", [b"", b"junk"])
def test_a_damaged_cached_download_is_one_line_naming_it(content, rgb_image):
    """A download cut short (empty) or replaced: one line naming the file and what to do, no traceback and
    no advice to load it without weights_only."""
    cache = hub.torchvision_cache_file(hub.torchvision_weights(ENUM))
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", MODEL])
    assert result.exit_code == 1 and "Traceback" not in result.output and "weights_only" not in result.output
    assert f"{cache}: not a readable weights file" in result.output and "delete it" in result.output


def test_local_weights_file(tmp_path, rgb_image):
    import torch

    path = tmp_path / "mine.pth"
    torch.save(_random_state(), path)
    result = runner.invoke(app, ["classify", str(rgb_image), "-m", MODEL, "-w", str(path), "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predictions"][0]["label"]


def test_weights_that_do_not_fit(tmp_path, rgb_image):
    import torch

    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    result = runner.invoke(app, ["classify", str(rgb_image), "-m", MODEL, "-w", str(path)])
    assert result.exit_code == 1 and "do not fit" in result.stderr


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UnsafeCheckpoint, match="refused"):
        load_state_dict(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CnnkitError):
        load_state_dict(raw)


def test_missing_weights_file(tmp_path):
    with pytest.raises(CnnkitError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")


def test_full_model_pickle_scan(tmp_path):
    """ultralytics .pt files are whole pickles: layers and tensors pass, code execution is refused."""
    import torch

    from cnnkit.models.checkpoint import check_full_pickle, pickle_globals

    good = tmp_path / "layers.pt"
    torch.save({"model": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), "epoch": 3}, good)
    assert "torch.nn.modules.conv.Conv2d" in pickle_globals(good)
    check_full_pickle(good)
    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    with pytest.raises(UnsafeCheckpoint, match="posix.system|os.system"):
        check_full_pickle(evil)


def test_detect_refuses_a_crafted_pt(tmp_path, rgb_image):
    import torch

    evil = tmp_path / "yolo-evil.pt"
    torch.save({"model": Evil()}, evil)
    result = runner.invoke(app, ["detect", str(rgb_image), "--model", str(evil)])
    assert result.exit_code == 1 and "refused" in result.stderr


def _bundled_safetensors_specs() -> list:
    from cnnkit.models.registry import list_models

    return [s for s in list_models() if s.source == "bundled" and s.weights.endswith(".safetensors")]


@pytest.mark.parametrize("spec", _bundled_safetensors_specs(), ids=lambda s: s.name)
def test_registry_describes_the_preprocessing_its_bundled_weights_run_with(spec):
    """``cnnkit models``/``info`` read the registry; prediction reads the checkpoint: they must agree."""
    from cnnkit.models.checkpoint import read_meta
    from cnnkit.models.preprocess import Preprocess

    stored = read_meta(hub.bundled_path(spec.weights)).get("preprocess")
    assert (Preprocess.from_dict(stored) if stored else None) == spec.preprocess


def test_a_model_name_beside_a_checkpoint_that_is_another_model_is_said(caplog):
    import logging

    from cnnkit.models.hub import WEIGHTS_DIR
    from cnnkit.models.loader import resolve

    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)  # a CLI run earlier in the process stops propagation
    try:
        with caplog.at_level(logging.WARNING, logger="cnnkit"):
            loaded = resolve("classify", "lenet5", str(WEIGHTS_DIR / "shapes-cnn.safetensors"))
    finally:
        logger.removeHandler(caplog.handler)
    assert loaded.name == "shapes-cnn"
    assert any("`model` lenet5 is not used" in r.getMessage() for r in caplog.records)


def test_a_model_name_beside_an_exported_file_that_is_another_model_is_said(caplog, tmp_path):
    """`--model resnet50 --weights m.onnx` ran the file's shapes-cnn with no word (a checkpoint said so)."""
    import logging

    from cnnkit.export import export_model
    from cnnkit.models.loader import resolve

    path = str(export_model("shapes-cnn", out=tmp_path / "m.onnx").path)
    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)  # a CLI run earlier in the process stops propagation
    try:
        with caplog.at_level(logging.WARNING, logger="cnnkit"):
            loaded = resolve("classify", "resnet50", path)
    finally:
        logger.removeHandler(caplog.handler)
    assert loaded.name == "shapes-cnn"
    assert any("`model` resnet50 is not used" in r.getMessage() for r in caplog.records)


def test_a_cached_file_holding_another_models_weights_is_named(tmp_path, monkeypatch):
    import torch
    import torchvision

    from cnnkit.errors import CnnkitError
    from cnnkit.models.hub import torchvision_cache_file, torchvision_weights
    from cnnkit.models.loader import resolve

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = torchvision_cache_file(torchvision_weights("MobileNet_V3_Small_Weights.IMAGENET1K_V1"))
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    with pytest.raises(CnnkitError) as err:
        resolve("classify", "mobilenet_v3_small", None, backend="torch")
    assert str(err.value).startswith(f"{cached}: ") and "delete it to download it again" in str(err.value)


def test_an_ultralytics_model_given_as_a_state_dict_is_named_as_one(tmp_path):
    """It read as an unsafe file ("would need arbitrary unpickling"); it is a detector's model file."""
    from cnnkit.models.hub import bundled_path

    yolo = bundled_path("shapes-yolov8n.pt")
    result = runner.invoke(app, ["classify", str(yolo), "--model", "resnet18", "--weights", str(yolo)])
    assert result.exit_code == 1 and "an ultralytics model file, not a state dict" in result.stderr
    assert "`cnnkit detect`" in result.stderr and "unpickling" not in result.stderr


def test_an_ultralytics_model_is_named_as_one_also_after_ultralytics_was_imported():
    """Once imported, ultralytics lets torch's weights-only loader build its classes: the file then loaded and
    failed as weights that do not fit."""
    from cnnkit import ultralytics_adapter
    from cnnkit.errors import CnnkitError
    from cnnkit.models.checkpoint import load_state_dict
    from cnnkit.models.hub import bundled_path

    ultralytics_adapter.yolo(bundled_path("shapes-yolov8n.pt"))
    with pytest.raises(CnnkitError, match="an ultralytics model file, not a state dict"):
        load_state_dict(bundled_path("shapes-yolov8n.pt"))


def test_an_empty_cached_download_is_not_ready():
    """`cnnkit models` said "ready" and `info` listed as cached a weights file left empty."""
    cache = hub.torchvision_cache_file(hub.torchvision_weights(ENUM))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"")
    info = json.loads(runner.invoke(app, ["info", "-f", "json"]).stdout)
    assert MODEL not in info["cached_pretrained"]


def test_a_state_dict_without_a_model_says_which_architecture_it_was_tried_on(tmp_path, rgb_image):
    """A resnet18 state dict given with no --model was "weights do not fit the architecture (Missing key(s) …)",
    with no word that it was tried as the default classifier nor how to name another."""
    import torch

    path = tmp_path / "r18.pth"
    torch.save(_random_state(), path)
    result = runner.invoke(app, ["classify", str(rgb_image), "-w", str(path)])
    assert result.exit_code == 1 and "tried as shapes-cnn" in result.stderr and "--model" in result.stderr


def test_a_state_dict_that_does_not_fit_a_segmenter_says_so_too(tmp_path, rgb_image):
    """The hint that a state dict was tried as the default model was classify's only."""
    import torch

    path = tmp_path / "r18.pth"
    torch.save(_random_state(), path)
    result = runner.invoke(app, ["segment", str(rgb_image), "-w", str(path)])
    assert result.exit_code == 1 and "tried as shapes-unet" in result.stderr and "--model" in result.stderr


def test_an_ultralytics_classifier_is_not_sent_to_cnnkit_detect(tmp_path, rgb_image):
    """`classify --weights yolov8n-cls.pt` said to run it with `cnnkit detect`, which then refused it."""
    from cnnkit import ultralytics_adapter

    ultralytics_adapter.ultralytics()
    from ultralytics import YOLO

    path = tmp_path / "yolov8n-cls.pt"
    YOLO("yolov8n-cls.yaml").save(str(path))
    result = runner.invoke(app, ["classify", str(rgb_image), "-w", str(path)])
    assert result.exit_code == 1 and "an ultralytics classify model file, which cnnkit does not run" in result.stderr


@pytest.mark.parametrize("kind", ["cls", "seg"])
def test_detect_refuses_an_ultralytics_model_of_another_task_saved_without_its_args(tmp_path, rgb_image, kind):
    """A -cls or -seg network saved with empty train_args loads as task "detect": `cnnkit detect` gave a
    traceback from NMS, and `export` wrote an ONNX file stamped detect. The network's class says what it is."""
    import torch

    from cnnkit import ultralytics_adapter

    ultralytics_adapter.ultralytics()
    from ultralytics.nn.tasks import ClassificationModel, SegmentationModel

    net = (ClassificationModel if kind == "cls" else SegmentationModel)(f"yolov8n-{kind}.yaml", nc=3, verbose=False)
    path = tmp_path / f"u{kind}.pt"
    torch.save({"model": net, "train_args": {}}, path)
    result = runner.invoke(app, ["detect", str(rgb_image), "-w", str(path)])
    task = "classify" if kind == "cls" else "segment"
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"u{kind}.pt: an ultralytics {task} model file, which cnnkit does not run" in result.stderr


def test_an_exported_classifier_without_preprocess_is_one_line(tmp_path, rgb_image):
    """An ONNX file whose cnnkit metadata lost its `preprocess` gave a ValueError traceback in classify."""
    import json as json_

    import onnx

    out = tmp_path / "cnn.onnx"
    assert runner.invoke(app, ["export", "shapes-cnn", "--to", "onnx", "-o", str(out)]).exit_code == 0
    proto = onnx.load(str(out))
    (entry,) = [p for p in proto.metadata_props if p.key == "cnnkit"]
    meta = json_.loads(entry.value)
    meta.pop("preprocess")
    entry.value = json_.dumps(meta)
    stripped = tmp_path / "nopre.onnx"
    onnx.save(proto, str(stripped))
    result = runner.invoke(app, ["classify", str(rgb_image), "-w", str(stripped), "--backend", "onnxruntime"])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert "no preprocessing is known" in result.stderr
