"""``segment`` and ``detect`` running files from ``cnnkit export`` on onnxruntime, and every task on TorchScript (``--backend``).

The bundled models are exported by name (so the tests follow a retrained ``shapes-unet``) and
every comparison is against the torch backend on the same images in the same process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnkit import export as ex
from cnnkit.cli import app
from cnnkit.errors import OptionError
from tests.conftest import REPO, SAMPLES
from tests.fixtures.visual import cli_error

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
runner = CliRunner()


def _records(task: str, *args: str) -> list[dict]:
    result = runner.invoke(app, [task, *args, "-f", "jsonl", "--threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- segment ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg_export") / "unet.onnx"
    return out, ex.export_model("shapes-unet", out=out, dynamic_batch=True)


@pytest.fixture(scope="module")
def seg_images(tmp_path_factory, masks_data):
    """Square 64 px scenes, a non-square 96×160 scene, and a 230×300 one that --tile 96 cuts into windows."""
    from cnnkit.data.shapes import scene

    folder = tmp_path_factory.mktemp("seg_images")
    for p in sorted((masks_data / "val" / "images").iterdir()):
        Image.open(p).save(folder / p.name)
    Image.fromarray(scene(11, 0, size=160).image[:96]).save(folder / "wide_96x160.png")
    Image.fromarray(np.asarray(Image.fromarray(scene(12, 0, size=300).image).resize((300, 230)))).save(
        folder / "large_230x300.png"
    )
    return folder


def _masks(images, out, *args: str) -> dict[str, np.ndarray]:
    recs = _records("segment", str(images), "--save-dir", str(out), *args)
    assert all(r["error"] is None for r in recs)
    return {r["path"].rsplit("/", 1)[-1]: np.asarray(Image.open(r["mask"])) for r in recs}


def test_segment_export_has_dynamic_height_and_width(unet_onnx):
    out, info = unet_onnx
    assert info.task == "segment" and info.input == ["batch", 3, "height", "width"]
    assert info.max_abs_diff <= ex.ATOL + ex.RTOL * 100
    shape = ort.InferenceSession(str(out)).get_inputs()[0].shape
    assert shape[:2] == ["batch", 3] and all(isinstance(d, str) for d in shape[2:])
    loaded = ex.load_exported(out, "segment")
    for h, w in ((128, 128), (96, 160), (64, 224)):
        assert loaded.module(torch.zeros(2, 3, h, w)).shape == (2, 6, h, w)


def test_segment_export_is_verified_on_a_non_square_input(tmp_path, monkeypatch):
    seen, real = [], ex._run_onnx
    monkeypatch.setattr(ex, "_run_onnx", lambda path, x: seen.append(tuple(x.shape)) or real(path, x))
    from cnnkit.models.registry import get_spec

    ex.export_model("shapes-unet", out=tmp_path / "ok.onnx")
    side = -(-get_spec("shapes-unet").preprocess.crop // 32) * 32
    assert seen == [(1, 3, side, side), (1, 3, side, side + 32)]

    def wrong_when_wide(path, x):  # an export that only works for square inputs must not be written
        outs = real(path, x)
        return [o + 1.0 for o in outs] if x.shape[2] != x.shape[3] else outs

    monkeypatch.setattr(ex, "_run_onnx", wrong_when_wide)
    assert "differs from PyTorch" in cli_error(
        runner.invoke(app, ["export", "shapes-unet", "--output", str(tmp_path / "bad.onnx")]), 1
    )
    assert not (tmp_path / "bad.onnx").exists()


def test_segment_onnxruntime_masks_match_torch(unet_onnx, seg_images, tmp_path):
    onnx_file, _ = unet_onnx
    want = _masks(seg_images, tmp_path / "torch", "--backend", "torch")
    got = _masks(seg_images, tmp_path / "ort", "--weights", str(onnx_file), "--backend", "onnxruntime", "-b", "3")
    assert sorted(got) == sorted(want) and len(got) == 4
    assert got["wide_96x160.png"].shape == (96, 160) and got["large_230x300.png"].shape == (230, 300)
    for name, mask in want.items():
        assert (got[name] == mask).mean() >= 0.99, name
        assert len(np.unique(mask)) > 1, name  # the model found something, so agreement is not trivial


def test_segment_onnxruntime_tiled_and_other_imgsz_match_torch(unet_onnx, seg_images, tmp_path):
    onnx_file, _ = unet_onnx
    args = ("--tile", "96", "--imgsz", "96", "--overlap", "0.3")
    want = _masks(seg_images, tmp_path / "torch", *args)
    got = _masks(seg_images, tmp_path / "ort", "--weights", str(onnx_file), *args)  # .onnx picks onnxruntime
    assert got["large_230x300.png"].shape == (230, 300)
    for name, mask in want.items():
        assert (got[name] == mask).mean() >= 0.99, name


def test_segment_api_and_val_with_onnx_weights(unet_onnx, masks_data):
    import cnnkit
    from cnnkit import api
    from cnnkit.tasks.segment.val import evaluate_folder

    onnx_file, _ = unet_onnx
    predictor = api.load("segment", weights=str(onnx_file), threads=1)
    assert type(predictor.model).__name__ == "OnnxModule" and predictor.name == "shapes-unet"
    image = np.asarray(Image.open(next((masks_data / "val" / "images").iterdir())))
    rec = cnnkit.segment(image, weights=str(onnx_file), backend="onnxruntime", threads=1)[0]
    ref = cnnkit.segment(image, backend="torch", threads=1)[0]
    assert [p["label"] for p in rec.predictions] == [p["label"] for p in ref.predictions]
    torch_scores = evaluate_folder(api.load("segment", threads=1), masks_data, split="val")
    ort_scores = evaluate_folder(predictor, masks_data, split="val")
    assert ort_scores["miou"] == pytest.approx(torch_scores["miou"], abs=0.01) and ort_scores["images"] == 2


def test_segment_backend_errors(unet_onnx, tiny_checkpoint, tmp_path):
    onnx_file, _ = unet_onnx
    image = str(SAMPLES / "scene_0.png")
    classify_onnx = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path

    def run(*args):
        return runner.invoke(app, ["segment", image, *args])

    forced = run("--backend", "onnxruntime", "--weights", str(tiny_checkpoint), "-f", "jsonl")  # compiled for it
    assert forced.exit_code == 0, forced.output
    assert "a classify model, not segment" in cli_error(run("--weights", classify_onnx), 2)
    assert "--arch" in cli_error(run("--weights", str(onnx_file), "--arch", "unet"), 2)
    assert "runs .torchscript files" in cli_error(run("--weights", str(onnx_file), "--backend", "torchscript"), 2)
    assert "openvino or torchscript" in cli_error(run("--backend", "tensorrt"), 2)


# -- detect -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_onnx(tmp_path_factory):
    """The bundled YOLO exported at its own size (256 px), fixed batch of 1."""
    if not (REPO / "cnnkit" / "ultralytics_adapter.py").is_file():
        pytest.skip("the detect task's ultralytics adapter is not in this checkout")
    out = tmp_path_factory.mktemp("yolo_export") / "yolo.onnx"
    return out, ex.export_model("shapes-yolov8n", out=out)


def _detect_images(scenes, tmp_path):
    """The samples and the unseen scenes in one folder (13 images)."""
    folder, _ = scenes
    tmp_path.mkdir(parents=True, exist_ok=True)
    for p in [*SAMPLES.glob("*.png"), *SAMPLES.glob("*.jpg")]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    for p in folder.iterdir():
        (tmp_path / f"unseen_{p.name}").write_bytes(p.read_bytes())
    return tmp_path


def test_detect_onnxruntime_matches_torch(yolo_onnx, scenes, tmp_path):
    onnx_file, info = yolo_onnx
    assert info.input == [1, 3, 256, 256]
    images = _detect_images(scenes, tmp_path)
    want = _records("detect", str(images), "--backend", "torch")
    got = _records("detect", str(images), "--weights", str(onnx_file), "--backend", "onnxruntime", "-b", "4")
    assert [r["path"] for r in got] == [r["path"] for r in want] and len(got) == 13
    assert sum(len(r["predictions"]) for r in want) >= 10
    for a, b in zip(want, got):
        assert b["model"] == "shapes-yolov8n" and b["error"] is None
        assert [p["class_id"] for p in b["predictions"]] == [p["class_id"] for p in a["predictions"]], a["path"]
        for p, q in zip(a["predictions"], b["predictions"]):
            assert p["label"] == q["label"]
            np.testing.assert_allclose(q["box"], p["box"], atol=1.0)
            assert abs(q["score"] - p["score"]) <= 1e-3


def test_detect_onnx_letterboxes_to_the_exported_size(yolo_onnx, scenes):
    from cnnkit.tasks.detect.predict import Detector

    onnx_file, _ = yolo_onnx
    detector = Detector.load(weights=str(onnx_file), threads=1)
    assert type(detector.backend.net).__name__ == "OnnxModule" and detector.backend.checkpoint is None
    assert detector.backend.imgsz == 256 and detector.labels == ["circle", "square", "triangle", "star", "hexagon"]
    wide = np.zeros((90, 300, 3), np.uint8)
    assert tuple(detector.backend.preprocess(wide).shape) == (3, 256, 256)
    records = detector.stream([str(p) for p in sorted(scenes[0].iterdir())], batch_size=3)
    assert all(r.error is None for r in records)
    # an `imgsz` that rounds up to the file's size is its size: `--imgsz 250` (or the 100 a file exported with
    # `--imgsz 100` was rounded up from) was refused with advice to export again at that size, which changed nothing
    assert Detector.load(weights=str(onnx_file), imgsz=250, threads=1).backend.imgsz == 256
    with pytest.raises(OptionError, match="exported for 256×256 inputs"):
        Detector.load(weights=str(onnx_file), imgsz=200, threads=1)


def test_detect_dynamic_onnx_pads_to_the_stride_as_the_pt_model_does(tmp_path):
    """``--dynamic-batch`` ONNX takes any height and width: run as the .pt model is (not a square letterbox,
    whose scores differed by 0.14 on a 333×97 picture), same boxes."""
    from cnnkit.tasks.detect.predict import Detector

    out = tmp_path / "dyn.onnx"
    ex.export_model("shapes-yolov8n", out=out, dynamic_batch=True)
    detector = Detector.load(weights=str(out), threads=1)
    assert tuple(detector.backend.preprocess(np.zeros((90, 300, 3), np.uint8)).shape) == (3, 96, 256)
    wide = tmp_path / "wide.png"
    Image.open(SAMPLES / "scene_0.png").resize((333, 97)).save(wide)
    want = _records("detect", str(wide), "--backend", "torch")[0]["predictions"]
    got = _records("detect", str(wide), "--weights", str(out), "--backend", "onnxruntime")[0]["predictions"]
    assert want and [p["class_id"] for p in got] == [p["class_id"] for p in want]
    for p, q in zip(want, got):
        np.testing.assert_allclose(q["box"], p["box"], atol=1.0)
        assert abs(q["score"] - p["score"]) <= 1e-3


def test_detect_api_and_val_with_onnx_weights(yolo_onnx, tmp_path):
    import cnnkit
    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.detect.val import validate

    onnx_file, _ = yolo_onnx
    labels = [
        p["label"]
        for p in cnnkit.detect(str(SAMPLES / "scene_0.png"), weights=str(onnx_file), threads=1)[0].predictions
    ]
    assert labels == [p["label"] for p in cnnkit.detect(str(SAMPLES / "scene_0.png"), threads=1)[0].predictions]
    export_shapes(tmp_path / "set", "yolo", n=6, seed=4242, imgsz=256, val_fraction=4 / 6)
    data = str(tmp_path / "set" / "data.yaml")
    ours = validate(data, weights=str(onnx_file), backend="onnxruntime", threads=1, workers=1)
    ref = validate(data, threads=1, workers=1, compare=False)
    assert "ultralytics" not in ours and ours["images"] == 4
    assert ours["mAP50"] == pytest.approx(ref["mAP50"], abs=1e-3)


def test_detect_backend_errors(yolo_onnx, unet_onnx, tmp_path):
    onnx_file, _ = yolo_onnx
    image = str(SAMPLES / "scene_0.png")
    classify_onnx = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path

    def run(*args):
        return runner.invoke(app, ["detect", image, *args])

    assert "exported for 256×256" in cli_error(run("--weights", str(onnx_file), "--imgsz", "320"), 2)
    assert "a classify model, not detect" in cli_error(run("--weights", classify_onnx), 2)
    assert "a segment model, not detect" in cli_error(run("--weights", str(unet_onnx[0])), 2)
    missing = tmp_path / "missing.onnx"
    assert str(missing) in cli_error(run("--weights", str(missing)), 1)


# -- torchscript --------------------------------------------------------------------------------


def test_classify_torchscript_backend_matches_torch(shapes_images, tmp_path):
    ts = tmp_path / "cnn.torchscript"
    ex.export_model("shapes-cnn", fmt="torchscript", out=ts)
    want = _records("classify", str(shapes_images), "-k", "2")
    got = _records("classify", str(shapes_images), "-k", "2", "--weights", str(ts), "-b", "5")  # fixed batch 1: slices
    assert len(got) == 12
    for a, b in zip(want, got):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        np.testing.assert_allclose(
            [p["score"] for p in a["predictions"]], [p["score"] for p in b["predictions"]], atol=1e-4
        )


def test_segment_torchscript_backend_matches_torch(seg_images, tmp_path):
    from cnnkit import api

    ts = tmp_path / "unet.torchscript"
    ex.export_model("shapes-unet", fmt="torchscript", out=ts)
    assert type(api.load("segment", weights=str(ts), threads=1).model).__name__ == "ScriptModule"
    args = ("--tile", "96", "--imgsz", "96")
    want = _masks(seg_images, tmp_path / "torch", *args)
    got = _masks(seg_images, tmp_path / "ts", "--weights", str(ts), "--backend", "torchscript", "-b", "3", *args)
    assert got["large_230x300.png"].shape == (230, 300) and got["wide_96x160.png"].shape == (96, 160)
    for name, mask in want.items():
        assert (got[name] == mask).mean() >= 0.99, name


def test_detect_torchscript_backend_matches_torch(yolo_onnx, scenes, tmp_path):
    from cnnkit.tasks.detect.predict import Detector

    ts = tmp_path / "yolo.torchscript"
    ex.export_model("shapes-yolov8n", fmt="torchscript", out=ts)
    detector = Detector.load(weights=str(ts), threads=1)
    assert type(detector.backend.net).__name__ == "ScriptModule" and detector.backend.imgsz == 256
    images = _detect_images(scenes, tmp_path / "images")
    want = _records("detect", str(images))
    got = _records("detect", str(images), "--weights", str(ts), "-b", "4")
    assert len(got) == 13 and sum(len(r["predictions"]) for r in got) >= 10
    for a, b in zip(want, got):
        assert [p["class_id"] for p in b["predictions"]] == [p["class_id"] for p in a["predictions"]], a["path"]
        for p, q in zip(a["predictions"], b["predictions"]):
            np.testing.assert_allclose(q["box"], p["box"], atol=1.0)
            assert abs(q["score"] - p["score"]) <= 1e-3


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_mask_rcnn_export_is_refused_in_one_line(fmt, tmp_path):
    """No traceback (TorchScript) and no comparison blamed on a temporary file (ONNX): one usage line."""
    out = tmp_path / f"m.{fmt}"
    result = runner.invoke(app, ["export", "shapes-maskrcnn", "--to", fmt, "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "instance (Mask R-CNN) models do not export" in result.output and not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_faster_rcnn_export_is_refused_before_its_weights_load(fmt, tmp_path, monkeypatch):
    """A registry Faster R-CNN loaded (online: downloaded, 75-167 MB) its pretrained weights, then was refused."""
    from cnnkit.models import hub

    monkeypatch.setattr(hub, "torchvision_weights", lambda *a, **k: pytest.fail("weights loaded before refusing"))
    out = tmp_path / f"f.{fmt}"
    result = runner.invoke(app, ["export", "fasterrcnn_mobilenet_v3_large_320_fpn", "--to", fmt, "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "only YOLO detectors export here, not torchvision" in result.output and not out.exists()


@pytest.mark.parametrize("extra", [[], ["--exist-ok"]])
def test_an_export_to_a_folder_says_so_first(extra, tmp_path):
    """`-o q/` said "already exists (pass --exist-ok …)", and with --exist-ok then "Is a directory"."""
    folder = tmp_path / "q"
    folder.mkdir()
    result = runner.invoke(app, ["export", "shapes-cnn", "-o", str(folder), *extra])
    assert result.exit_code == 1 and f"{folder}: is a folder (an export is one file)" in result.output
    assert list(folder.iterdir()) == []


def test_an_output_name_that_says_another_format_is_refused(tmp_path):
    for fmt, name, said in (("onnx", "m.torchscript", "torchscript"), ("torchscript", "m.onnx", "onnx")):
        result = runner.invoke(app, ["export", "shapes-cnn", "--to", fmt, "-o", str(tmp_path / name)])
        assert result.exit_code == 2 and f"named as a {said} file, but the export is {fmt}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_cnnkit_would_not_load_back_is_said(tmp_path):
    """`export --to torchscript -o m.pt` (PyTorch's own habit) wrote a file `--weights m.pt` then refused as a
    pickle, and `-o model` an ONNX file read as nothing known, without a word at export: now it says so."""
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "model")):
        result = runner.invoke(app, ["export", "shapes-cnn", "--to", fmt, "-o", str(tmp_path / name)])
        assert result.exit_code == 0 and (tmp_path / name).is_file(), result.output
        assert f"knows a {fmt} file to load by its name, *.{fmt}; rename it so" in result.stderr
    named = runner.invoke(app, ["export", "shapes-cnn", "-o", str(tmp_path / "m.onnx")])
    assert named.exit_code == 0 and "rename it" not in named.stderr
