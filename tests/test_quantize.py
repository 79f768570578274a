"""INT8 export (``cnnkit.quantize``): a calibrated file that runs like any export, and the refusal to write
one that loses more than ``max_drop`` points on the val folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.errors import CnnkitError, OptionError, UsageError

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def shapes_sets(tmp_path_factory):
    """``val/<class>/`` (60 images), ``cal/`` (60 other images of the same kind) and ``dark/`` (4 near-black ones)."""
    from cnnkit.data.shapes import CLASSES, classification_sample

    root = tmp_path_factory.mktemp("int8")
    for i in range(60):
        img, cid = classification_sample(321, i, size=64)
        (root / "val" / CLASSES[cid]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "val" / CLASSES[cid] / f"{i}.png")
        img, _ = classification_sample(999, i, size=64)
        (root / "cal").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / "cal" / f"{i}.png")
    (root / "dark").mkdir()
    for i in range(4):
        Image.fromarray(np.full((64, 64, 3), 2 * i, np.uint8)).save(root / "dark" / f"{i}.png")
    return root


def test_int8_file_is_written_scored_and_runs(shapes_sets, tmp_path):
    import cnnkit
    from cnnkit.quantize import export_int8

    out = tmp_path / "cnn-int8.onnx"
    result = export_int8("shapes-cnn", calibrate=shapes_sets / "cal", val=str(shapes_sets / "val"), out=out)
    assert out.is_file() and result.path == str(out) and result.calibration_images == 60
    assert result.metric == "top1" and result.drop_points is not None and result.drop_points <= result.max_drop == 1.0
    assert result.size_mb < result.fp32_size_mb  # int8 weights
    meta = json.loads(next(p.value for p in onnx.load(str(out)).metadata_props if p.key == "cnnkit"))
    assert meta["precision"] == "int8" and meta["task"] == "classify"
    want = cnnkit.classify(shapes_sets / "val", topk=1, backend="torch", threads=1, recursive=True)
    got = cnnkit.classify(shapes_sets / "val", weights=str(out), topk=1, threads=1, recursive=True)
    assert len(got) == len(want) == 60 and all(r.error is None for r in got)
    same = np.mean([g.predictions[0]["label"] == w.predictions[0]["label"] for g, w in zip(got, want)])
    assert same >= 0.95
    from cnnkit.eval.report import runtime_facts

    assert runtime_facts(cnnkit.load("classify", weights=str(out)))["precision"] == "int8"  # val and benchmark say so


def test_int8_that_loses_accuracy_is_refused_and_not_written(shapes_sets, tmp_path):
    from cnnkit.quantize import export_int8

    out = tmp_path / "bad.onnx"
    with pytest.raises(CnnkitError, match=r"INT8 loses .* points of top1 .*not written"):
        export_int8(
            "shapes-cnn", calibrate=shapes_sets / "dark", val=str(shapes_sets / "val"), out=out, max_drop=1.0
        )  # ranges from near-black images clip every real activation
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_options_are_checked(shapes_sets, tmp_path):
    from cnnkit.quantize import export_int8

    with pytest.raises(OptionError, match="no images"):
        export_int8("shapes-cnn", calibrate=tmp_path, out=tmp_path / "x.onnx")
    with pytest.raises(OptionError) as info:
        export_int8("shapes-cnn", calibrate=shapes_sets / "cal", max_drop=-1)
    assert info.value.options == ("max_drop",)
    with pytest.raises(UsageError, match="classify and segment"):
        export_int8("shapes-yolov8n", calibrate=shapes_sets / "cal")


def test_a_bad_calibration_image_is_named_and_left_out_and_a_missing_folder_is_said(shapes_sets, tmp_path, caplog):
    """One broken file among the calibration images ended the export with "not a recognised image format", naming
    no file; a missing folder was counted as one image, then failed with "no such file"."""
    import logging
    import shutil

    from cnnkit.quantize import calibration_images, reader

    cal = tmp_path / "cal"
    shutil.copytree(shapes_sets / "cal", cal)
    (cal / "0_bad.png").write_text("garbage")
    with pytest.raises(OptionError, match="no such file or folder"):
        calibration_images(tmp_path / "nowhere", 10)
    paths = calibration_images(cal, 5)
    assert str(cal / "0_bad.png") in paths

    class Predictor:
        min_side = None

        @staticmethod
        def preprocess(decoded):
            import torch

            return torch.zeros(3, 8, 8)

    logger = logging.getLogger("cnnkit")
    logger.addHandler(caplog.handler)
    try:
        calibration = reader(Predictor(), paths, "images")
        taken = 0
        while calibration.get_next() is not None:
            taken += 1
    finally:
        logger.removeHandler(caplog.handler)
    assert taken == len(paths) - 1
    assert f"left out of calibration: {cal / '0_bad.png'}: not a recognised image format" in caplog.text


def test_an_existing_int8_output_is_refused_before_calibrating(shapes_sets, tmp_path, monkeypatch):
    from cnnkit import quantize

    (tmp_path / "kept.onnx").write_bytes(b"mine")
    monkeypatch.setattr(quantize, "calibration_images", lambda *a: pytest.fail("calibrated first"))
    with pytest.raises(CnnkitError, match="already exists"):
        quantize.export_int8("shapes-cnn", calibrate=shapes_sets / "cal", out=tmp_path / "kept.onnx")
    assert (tmp_path / "kept.onnx").read_bytes() == b"mine"


def test_an_existing_default_int8_output_is_refused_before_calibrating(shapes_sets, tmp_path, monkeypatch):
    """Without `out`, runs/export/NAME-int8.onnx was found to exist only after calibrating and scoring."""
    from cnnkit import quantize

    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "runs" / "export" / "shapes-cnn-int8.onnx"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"mine")
    monkeypatch.setattr(quantize, "calibration_images", lambda *a: pytest.fail("calibrated first"))
    with pytest.raises(CnnkitError, match="already exists"):
        quantize.export_int8("shapes-cnn", calibrate=shapes_sets / "cal")
    assert kept.read_bytes() == b"mine"


def test_export_int8_cli_needs_calibration_and_reports_a_refusal(shapes_sets, tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["export", "shapes-cnn", "--int8", "-o", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2 and "--calibrate" in missing.output
    lonely = runner.invoke(app, ["export", "shapes-cnn", "--calibrate", str(shapes_sets / "cal")])
    assert lonely.exit_code == 2 and "--int8" in lonely.output
    refused = runner.invoke(
        app,
        [
            "export",
            "shapes-cnn",
            "--int8",
            "--calibrate",
            str(shapes_sets / "dark"),
            "--val",
            str(shapes_sets / "val"),
            "--max-drop",
            "1",
            "-o",
            str(tmp_path / "bad.onnx"),
        ],
    )
    assert refused.exit_code == 1 and "not written" in refused.output
    assert not (tmp_path / "bad.onnx").exists()


def test_an_int8_segmenter_scores_by_default_what_its_gate_measured(tmp_path, monkeypatch):
    """The gate scores with ONNX Runtime; `auto` ran the file on OpenVINO, whose output for an INT8 file of free
    input size was far off (the bundled U-Net: mIoU 0.43 where the gate said 0.87). That is told from the file
    before anything is compiled (it was compiled for OpenVINO first, then loaded again)."""
    pytest.importorskip("openvino")
    import cnnkit
    import cnnkit.export
    from cnnkit.data.export import export_shapes
    from cnnkit.quantize import export_int8

    export_shapes(tmp_path / "m", "masks", 24, seed=5, imgsz=128, val_fraction=0.5)
    out = tmp_path / "unet-int8.onnx"
    result = export_int8(
        "shapes-unet", calibrate=tmp_path / "m/train/images", val=str(tmp_path / "m/val"), out=out, max_drop=10
    )
    compiled = []
    monkeypatch.setattr(cnnkit.export, "openvino_module", lambda path: compiled.append(path))
    loaded = cnnkit.load("segment", weights=str(out), backend="auto", threads=1)
    assert loaded.loaded.runtime == "onnxruntime" and compiled == []
    from cnnkit.tasks.segment.val import validate

    got = validate(str(tmp_path / "m"), weights=str(out), backend="auto", threads=1)
    assert got["miou"] == pytest.approx(result.int8, abs=2e-3)


def test_an_int8_deeplabv3plus_runs_and_a_file_that_does_not_is_not_written(tmp_path, monkeypatch):
    """Every op quantized, the padding DeepLabV3+ works out from its input size became 0 and its INT8 file ran on
    no input at all; without `val` nothing ran the file before it was written."""
    import onnxruntime.quantization

    import cnnkit
    from cnnkit.data.export import export_shapes
    from cnnkit.quantize import export_int8

    export_shapes(tmp_path / "m", "masks", 6, seed=5, imgsz=128, val_fraction=0.0)
    images = tmp_path / "m/train/images"
    out = tmp_path / "dl-int8.onnx"
    export_int8("shapes-deeplabv3plus", calibrate=images, out=out)
    records = cnnkit.segment(images, weights=str(out), backend="onnxruntime", threads=1)
    assert len(records) == 6 and all(r.ok for r in records)

    import cnnkit.export

    def cannot_open(path):
        raise CnnkitError(f"{path}: onnxruntime cannot open it (a broken graph)")

    def broken(fp32, int8, *args, **kwargs):  # a file onnxruntime then cannot open
        Path(int8).write_bytes(Path(fp32).read_bytes())
        monkeypatch.setattr(cnnkit.export, "_session", cannot_open)

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", broken)
    bad = tmp_path / "bad-int8.onnx"
    with pytest.raises(
        CnnkitError, match=r"does not run on .*\(the INT8 file: onnxruntime cannot open it .*not written"
    ):
        export_int8("shapes-deeplabv3plus", calibrate=images, out=bad)
    assert not bad.exists()
