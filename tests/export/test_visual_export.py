"""``cnnkit export`` (ONNX, TorchScript, verified on the spot) and ``classify --backend onnxruntime``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnnkit import export as ex
from cnnkit.cli import app
from cnnkit.errors import UsageError
from cnnkit.models.registry import get_spec
from tests.conftest import REPO
from tests.fixtures.visual import DIGITS, cli_error, lenet_checkpoint

runner = CliRunner()
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(*args: str) -> dict:
    result = runner.invoke(app, ["export", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _classify(images, *args: str) -> list[dict]:
    result = runner.invoke(app, ["classify", str(images), "-f", "jsonl", "-k", "5", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def shapes_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "shapes.onnx"
    info = ex.export_model("shapes-cnn", out=out, dynamic_batch=True)
    return out, info


def test_onnx_export_is_verified_and_carries_labels_and_preprocessing(shapes_onnx):
    out, info = shapes_onnx
    assert info.max_abs_diff <= ex.ATOL and info.verified_with.startswith("onnxruntime")
    assert info.input == ["batch", 3, 64, 64]
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["cnnkit"])
    spec = get_spec("shapes-cnn")
    assert meta["labels"] == list(spec.labels) and meta["preprocess"] == spec.preprocess.to_dict()
    assert meta["task"] == "classify" and meta["outputs"] == ["logits"]


def test_classify_onnxruntime_backend_matches_torch(shapes_onnx, shapes_images):
    out, _ = shapes_onnx
    torch_recs = _classify(shapes_images)
    ort_recs = _classify(shapes_images, "--weights", str(out), "--backend", "onnxruntime", "-b", "5")
    assert [r["path"] for r in ort_recs] == [r["path"] for r in torch_recs] and len(ort_recs) == 12
    for a, b in zip(torch_recs, ort_recs):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose(
            [p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]], atol=1e-4
        )
    assert ort_recs[0]["model"] == "shapes-cnn"
    auto = _classify(shapes_images, "--weights", str(out))  # a .onnx file picks onnxruntime by itself
    assert [r["predictions"][0]["label"] for r in auto] == [r["predictions"][0]["label"] for r in ort_recs]


def test_fixed_batch_export_runs_bigger_batches_in_slices(tmp_path, shapes_images):
    out = tmp_path / "fixed.onnx"
    info = _export("shapes-cnn", "--output", str(out))
    assert info["input"] == [1, 3, 64, 64] and not info["dynamic_batch"]
    assert ort.InferenceSession(str(out)).get_inputs()[0].shape == [1, 3, 64, 64]
    assert len(_classify(shapes_images, "--weights", str(out), "--backend", "onnxruntime", "-b", "4")) == 12


def test_a_fixed_batch_of_four_runs_a_last_slice_short_of_it():
    """A file traced at batch 4 (made outside `cnnkit export`): every batch whose size was not a multiple of 4
    failed on its last slice ("got [1,3,64,64] expecting [4,3,64,64]"); the slice is padded, the outputs cut."""
    seen: list[int] = []

    def run(part: torch.Tensor) -> list[torch.Tensor]:
        assert len(part) == 4
        seen.append(len(part))
        return [part.flatten(1).sum(1, keepdim=True)]

    x = torch.arange(6 * 3 * 2 * 2, dtype=torch.float32).reshape(6, 3, 2, 2)
    out = ex._in_slices(run, x, 4, "fixed4.onnx")
    assert seen == [4, 4] and torch.equal(out, x.flatten(1).sum(1, keepdim=True))


def test_checkpoint_export_beside_it_with_other_imgsz(tmp_path):
    ckpt = lenet_checkpoint(tmp_path)
    with pytest.raises(UsageError, match="48x48"):
        ex.export_model(str(ckpt), imgsz=48)  # LeNet-5's head is fixed to 32×32
    info = _export(str(ckpt))
    assert info["path"] == str(tmp_path / "lenet.onnx") and info["input"] == [1, 3, 32, 32]
    loaded = ex.load_exported(info["path"], "classify")
    assert loaded.labels == DIGITS and loaded.preprocess.crop == 32
    x = torch.randn(2, 3, 32, 32)
    from cnnkit.models.loader import resolve

    ref = resolve("classify", None, str(ckpt)).module.eval()(x)
    np.testing.assert_allclose(loaded.module(x).numpy(), ref.detach().numpy(), atol=1e-4)


def test_imgsz_rescales_the_preprocessing(tmp_path):
    info = _export("shapes-cnn", "--imgsz", "96", "--output", str(tmp_path / "s96.onnx"))
    loaded = ex.load_exported(info["path"], "classify")
    assert (loaded.preprocess.resize, loaded.preprocess.crop) == (96, 96) and info["input"] == [1, 3, 96, 96]


def test_torchscript_export(tmp_path):
    out = tmp_path / "s.torchscript"
    info = _export("shapes-cnn", "--to", "torchscript", "--dynamic-batch", "--output", str(out))
    assert info["format"] == "torchscript" and info["max_abs_diff"] <= ex.ATOL
    extra = {"cnnkit.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["cnnkit.json"])["labels"] == list(get_spec("shapes-cnn").labels)
    assert module(torch.zeros(3, 3, 64, 64)).shape == (3, len(get_spec("shapes-cnn").labels))


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    real = ex._run_onnx
    monkeypatch.setattr(ex, "_run_onnx", lambda path, x: [o + 0.5 for o in real(path, x)])
    out = tmp_path / "bad.onnx"
    assert "differs from PyTorch" in cli_error(runner.invoke(app, ["export", "shapes-cnn", "--output", str(out)]), 1)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "x.onnx"
    assert "pip install onnxruntime" in cli_error(runner.invoke(app, ["export", "shapes-cnn", "--output", str(out)]), 1)
    assert not out.exists()


def test_export_refuses_overwrite_and_bad_options(tmp_path):
    out = tmp_path / "s.onnx"
    _export("shapes-cnn", "--output", str(out))
    assert "already exists" in cli_error(runner.invoke(app, ["export", "shapes-cnn", "--output", str(out)]), 1)
    assert _export("shapes-cnn", "--output", str(out), "--exist-ok")["path"] == str(out)
    assert "--to 'tflite': expected onnx or torchscript" in cli_error(
        runner.invoke(app, ["export", "shapes-cnn", "--to", "tflite"]), 2
    )
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    assert "--task" in cli_error(runner.invoke(app, ["export", str(weights)]), 2)
    assert "no classify exporter" in cli_error(runner.invoke(app, ["export", str(weights), "--task", "classify"]), 2)


def test_backend_errors(tmp_path, shapes_onnx, rgb_image):
    onnx_file, _ = shapes_onnx
    ckpt = lenet_checkpoint(tmp_path)

    def run(*args):
        return runner.invoke(app, ["classify", str(rgb_image), *args])

    assert run("--backend", "onnxruntime", "--weights", str(ckpt)).exit_code == 0  # a forced runtime compiles it
    assert "auto, torch, onnxruntime, openvino or torchscript" in cli_error(run("--backend", "tensorrt"), 2)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.zeros(1, 3, 8, 8),), str(plain), dynamo=False)
    assert "no cnnkit metadata" in cli_error(run("--weights", str(plain)), 1)
    with pytest.raises(Exception, match="not segment"):
        ex.load_exported(onnx_file, "segment")


def test_task_exporter_hook(tmp_path, monkeypatch):
    calls = []

    def fake(target, **kwargs):
        calls.append((target, kwargs))
        return ex.ExportResult(
            str(tmp_path / "y.onnx"), kwargs["fmt"], "classify", target, [1, 3, 8, 8], False, 0.0, "-", "fake", 0.0, 0.0
        )

    from cnnkit.tasks import Task

    monkeypatch.setattr(Task, "exporter", lambda self: fake if self.name == "classify" else None)
    info = _export("shapes-cnn", "--imgsz", "8", "--dynamic-batch")
    assert info["verified_with"] == "fake"
    assert calls == [
        ("shapes-cnn", {"fmt": "onnx", "imgsz": 8, "dynamic_batch": True, "out": None, "overwrite": False})
    ]


def test_export_and_run_subprocess(tmp_path, shapes_images):
    out = tmp_path / "s.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "export", "shapes-cnn", "--output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(out)
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "classify", str(shapes_images), "--weights", str(out), "-f", "jsonl"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 12


def test_missing_onnx_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "x.onnx"
    assert "pip install onnx" in cli_error(runner.invoke(app, ["export", "shapes-cnn", "--output", str(out)]), 1)
    assert not out.exists()
