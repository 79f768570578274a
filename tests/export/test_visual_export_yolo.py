"""The detect task's exporter hook: ultralytics' own exporter for YOLO, verified like every export.

Needs the detect task's ultralytics adapter; skipped where it is not merged yet.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from tests.conftest import REPO
from tests.fixtures.visual import cli_error

if not (REPO / "cnnkit" / "ultralytics_adapter.py").is_file():  # this checkout, not another install on the path
    pytest.skip("the detect task's ultralytics adapter is not in this checkout", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_yolo(tmp_path_factory):
    """A YOLOv8n checkpoint with random weights, built from ultralytics' yaml (no download)."""
    from cnnkit import ultralytics_adapter

    path = tmp_path_factory.mktemp("yolo") / "tiny.pt"
    with ultralytics_adapter.quiet():
        ultralytics_adapter.yolo("yolov8n.yaml").save(str(path))
    return path


def test_yolo_export_to_onnx_is_verified_and_stamped(tiny_yolo, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = runner.invoke(
        app,
        ["export", str(tiny_yolo), "--imgsz", "64", "--dynamic-batch", "--output", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["task"] == "detect" and info["input"] == ["batch", 3, 64, 64] and info["max_abs_diff"] <= 1e-3
    session = ort.InferenceSession(str(out))
    meta = json.loads(session.get_modelmeta().custom_metadata_map["cnnkit"])
    assert len(meta["labels"]) == 80 and meta["stride"] == 32 and meta["letterbox"] == 64
    assert not (tiny_yolo.parent / "tiny.onnx").exists()  # ultralytics wrote into a temporary copy's folder
    assert "already exists" in cli_error(
        runner.invoke(app, ["export", str(tiny_yolo), "--imgsz", "64", "--output", str(out)]), 1
    )
