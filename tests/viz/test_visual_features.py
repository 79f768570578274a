"""``cnnkit features`` and ``cnnkit filters``: PNG grids of feature maps and first-layer kernels."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.viz.features import capture, filter_panel, load_for_viewing, stage_layers
from cnnkit.viz.summary import summarize_target
from tests.conftest import REPO, SAMPLES
from tests.fixtures.visual import cli_error, lenet_checkpoint

runner = CliRunner()
CIRCLE = str(SAMPLES / "shape_1_circle.png")


def test_default_layers_are_one_per_stage():
    rows = summarize_target("resnet18", imgsz=224).layers
    assert stage_layers(rows) == ["relu", "layer1.1.relu", "layer2.1.relu", "layer3.1.relu", "layer4.1.relu"]
    sizes = [next(r.output for r in reversed(rows) if r.name == n)[1] for n in stage_layers(rows)]
    assert sizes == [112, 56, 28, 14, 7]
    assert len(stage_layers(rows, limit=3)) == 3


def test_features_default_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["features", CIRCLE, "--output", str(out), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["model"] == "shapes-cnn" and info["saved"] == str(out)
    sides = [layer["shape"][1] for layer in info["layers"]]
    assert sides == sorted(sides, reverse=True) and sides[0] == 64 and len(set(sides)) == len(sides)
    rfs = [layer["rf"][0] for layer in info["layers"]]
    assert rfs == sorted(rfs) and rfs[0] < rfs[-1]  # deeper layers see more of the image
    img = Image.open(out)
    assert img.format == "PNG" and img.height > 96 * (len(sides) + 1)


def test_features_chosen_layers_show_the_most_active_channels(tmp_path):
    out = tmp_path / "two.png"
    args = [
        "features",
        CIRCLE,
        "-l",
        "features.0.2",
        "-l",
        "features.2.5",
        "--channels",
        "3",
        "--cell",
        "32",
        "--output",
        str(out),
        "-f",
        "json",
    ]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert [layer["layer"] for layer in info["layers"]] == ["features.0.2", "features.2.5"]
    loaded = load_for_viewing("shapes-cnn")
    from cnnkit.io.decode import decode

    maps = capture(loaded.module.eval(), loaded.preprocess(decode(CIRCLE).rgb)[None], ["features.2.5"])
    means = maps["features.2.5"][0].mean(dim=(1, 2))
    assert info["layers"][1]["channels"] == means.argsort(descending=True, stable=True)[:3].tolist()
    assert "already exists" in cli_error(runner.invoke(app, args), 1)
    assert runner.invoke(app, [*args, "--exist-ok"]).exit_code == 0


def test_features_bad_layers(tmp_path):
    out = str(tmp_path / "x.png")
    assert "no such layer" in cli_error(runner.invoke(app, ["features", CIRCLE, "-l", "nope", "--output", out]), 2)
    assert "feature maps" in cli_error(runner.invoke(app, ["features", CIRCLE, "-l", "fc", "--output", out]), 2)
    assert not (tmp_path / "x.png").exists()


def test_features_default_path_from_a_checkpoint(tmp_path, monkeypatch):
    ckpt = lenet_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["features", CIRCLE, "--weights", str(ckpt), "-f", "table"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "features" / "shape_1_circle-lenet-test.png").is_file()
    assert "features.1: 6×28×28" in result.stdout


def test_filters_of_the_bundled_model(tmp_path):
    out = tmp_path / "filters.png"
    result = runner.invoke(app, ["filters", "--output", str(out), "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["layer"] == "features.0.0" and info["shape"] == [24, 3, 3, 3]
    assert Image.open(out).width >= 16 * 48


def test_filters_of_a_checkpoint_and_a_chosen_layer(tmp_path):
    ckpt = lenet_checkpoint(tmp_path)
    result = runner.invoke(
        app,
        ["filters", str(ckpt), "--layer", "features.3", "--output", str(tmp_path / "f.png"), "-f", "json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shape"] == [16, 6, 5, 5]
    assert "not a Conv2d" in cli_error(runner.invoke(app, ["filters", str(ckpt), "--layer", "features.1"]), 2)


def test_filter_colours():
    weight = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)  # one 1×1 filter reading R, G, B
    panel, info = filter_panel("conv", weight)
    assert info["shape"] == [1, 3, 1, 1]
    assert panel.cells[0][0, 0].tolist() == [255, 0, 128]  # + → full, − → none, 0 → middle grey
    single = filter_panel("conv", torch.tensor([[[[2.0, -2.0]]]]))[0].cells[0]
    assert single[0, 0, 0] > single[0, 0, 2] and single[0, 1, 2] > single[0, 1, 0]  # red positive, blue negative


def test_features_subprocess(tmp_path):
    out = tmp_path / "f.png"
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "features", CIRCLE, "--out", str(out), "-c", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["saved"] == str(out) and np.asarray(Image.open(out)).ndim == 3


def test_visual_outputs_never_replace_their_input_nor_go_to_a_file_named_dash(tmp_path, monkeypatch):
    """conv and features refuse -o naming their own image (even with --exist-ok); a picture is not written to
    stdout (it made a file named '-'), and its name's suffix says its format."""
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "in.png"
    image.write_bytes((SAMPLES / "shape_1_circle.png").read_bytes())
    before = image.read_bytes()
    runner = CliRunner()
    for command in (["conv", str(image)], ["features", str(image)]):
        result = runner.invoke(app, [*command, "-o", str(image), "--exist-ok"])
        assert result.exit_code != 0 and "is also an input" in result.output, command
    assert image.read_bytes() == before
    for command in (["features", str(image)], ["filters"]):
        result = runner.invoke(app, [*command, "-o", "-"])
        assert result.exit_code == 2 and "not to stdout" in result.output
    assert not (tmp_path / "-").exists()
    assert runner.invoke(app, ["features", str(image), "-o", "f.txt"]).exit_code == 2
    assert runner.invoke(app, ["features", str(image), "-o", "f.jpg"]).exit_code == 0
    assert Image.open(tmp_path / "f.jpg").format == "JPEG"
    report = runner.invoke(app, ["classify", str(image), "--report", "-"])
    assert report.exit_code == 2 and "not stdout" in report.output and not (tmp_path / "-").exists()


def test_a_picture_name_that_cannot_be_written_is_said_before_the_model_loads(tmp_path):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    for args in (["features", str(image), "--model", "no-such-model"], ["filters", "no-such-model"]):
        result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "grid.gif")])
        assert result.exit_code == 2 and "a picture is written as .png, .jpg or .webp" in result.stderr, args


def test_layers_without_the_images_maps_and_exported_files_are_one_line(tmp_path):
    """An R-CNN's per-region layer (a map per region, or none: an IndexError traceback), a classifier's fc for
    explain (Grad-CAM's traceback) or its 1x1 pool (a blank map), and an exported file (no layers: an empty
    figure, exit 0) are refused in one line naming the option."""
    from cnnkit import export as ex

    photo = str(SAMPLES / "shape_0_triangle.png")
    result = runner.invoke(
        app,
        [
            "features",
            photo,
            "-m",
            "shapes-maskrcnn",
            "--layer",
            "roi_heads.mask_head.0.0",
            "-o",
            str(tmp_path / "f.png"),
        ],
    )
    assert "--layer roi_heads.mask_head.0.0: gives [" in cli_error(result, 2) and "per region" in result.output
    for layer, shape in (("fc", "[1, 6]"), ("pool", "[1, 96, 1, 1]")):
        result = runner.invoke(app, ["explain", photo, "--layer", layer, "--save-dir", str(tmp_path / layer)])
        assert f"--layer {layer}: gives {shape}, not C×H×W maps" in cli_error(result, 2)
    onnx = ex.export_model("shapes-cnn", out=tmp_path / "cls.onnx").path
    for args in (["features", photo, "--weights", onnx], ["features", photo, "-m", onnx], ["filters", onnx]):
        result = runner.invoke(app, [*args, "-o", str(tmp_path / "x.png")])
        assert "an exported file has no PyTorch layers" in cli_error(result, 2)
    result = runner.invoke(app, ["explain", photo, "--weights", onnx, "--save-dir", str(tmp_path / "e")])
    assert "explain needs the PyTorch model" in cli_error(result, 2) and "--backend" not in result.output
    assert not (tmp_path / "x.png").exists()
