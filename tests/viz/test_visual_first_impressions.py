"""``features``/``filters`` on every bundled model (#15): the input as the model sees it, files never clobbered,
captions never cut."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.viz.features import Panel, load_for_viewing, model_input, render
from tests.fixtures.visual import cli_error

runner = CliRunner()

# model → a layer to ask for by name (a leaf for most, a YOLO block: its activation is shared)
BUNDLED = {
    "shapes-yolov8n": "model.2",
    "shapes-unet": "encoder.model.conv_stem",
    "shapes-maskrcnn": "backbone.body.layer1",
    "shapes-cnn": "features.1.5",
}


def _image(path, h: int, w: int, seed: int = 0):
    """Bright random colours: never the letterbox grey (114) nor a flat colour."""
    Image.fromarray(np.random.default_rng(seed).integers(150, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _ok(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("model", list(BUNDLED))
def test_features_and_filters_rerun_without_clobbering(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = str(_image(tmp_path / "pic.png", 24, 40))
    first = _ok(["features", img, "-m", model, "-c", "2", "--cell", "16"])
    assert first["saved"] == f"runs/features/pic-{model}.png" and first["model"] == model
    assert first["layers"] and Image.open(first["saved"]).format == "PNG"
    before = (tmp_path / first["saved"]).read_bytes()

    again = _ok(["features", img, "-m", model, "-c", "3", "--cell", "16"])  # other options, same default name
    assert again["saved"] == f"runs/features/pic-{model}-2.png"
    assert all(len(layer["channels"]) == 3 for layer in again["layers"])
    layer = BUNDLED[model]
    chosen = _ok(["features", img, "-m", model, "-l", layer, "-c", "1", "--cell", "16"])
    assert chosen["saved"] == f"runs/features/pic-{model}-{layer}.png"
    assert [x["layer"] for x in chosen["layers"]] == [layer] and len(chosen["layers"][0]["shape"]) == 3
    assert (tmp_path / first["saved"]).read_bytes() == before

    kernels = _ok(["filters", model, "--cell", "8"])
    assert kernels["saved"] == f"runs/filters/{model}-{kernels['layer']}.png" and len(kernels["shape"]) == 4
    kept = (tmp_path / kernels["saved"]).read_bytes()
    assert _ok(["filters", model, "--cell", "9"])["saved"] == f"runs/filters/{model}-{kernels['layer']}-2.png"
    assert (tmp_path / kernels["saved"]).read_bytes() == kept
    assert Image.open(f"runs/filters/{model}-{kernels['layer']}-2.png").format == "PNG"


def test_an_explicit_out_is_still_refused_unless_exist_ok(tmp_path):
    out = tmp_path / "mine.png"
    out.write_bytes(b"keep me")
    args = ["filters", "shapes-yolov8n", "--cell", "8", "-o", str(out)]
    assert "already exists" in cli_error(runner.invoke(app, args), 1)
    assert out.read_bytes() == b"keep me" and not list(tmp_path.glob("mine-*"))
    assert _ok([*args, "--exist-ok"])["saved"] == str(out)
    assert Image.open(out).format == "PNG"


def _grey_rows(png) -> int:
    """Rows of the figure holding a run of at least 60 pixels of exactly the letterbox grey."""
    a = np.asarray(Image.open(png).convert("RGB"))
    grey = (a == 114).all(axis=2).astype(np.int8)
    rows = 0
    for line in grey:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line, [0]])))
        if len(edges) and (edges[1::2] - edges[::2]).max() >= 60:
            rows += 1
    return rows


def test_yolo_features_show_the_letterboxed_input(tmp_path):
    wide = str(_image(tmp_path / "wide.png", 32, 64))
    loaded = load_for_viewing("shapes-yolov8n")
    seen = model_input(loaded, np.asarray(Image.open(wide)))
    assert seen.picture.shape == (256, 256, 3) and tuple(seen.x.shape) == (1, 3, 256, 256)
    assert (seen.picture[:64] == 114).all() and (seen.picture[192:] == 114).all()  # centred, grey above and below
    assert (seen.picture[72:184] >= 150).all()
    assert float(seen.x.min()) >= 0 and float(seen.x.max()) <= 1  # scaled to [0, 1], no mean/std

    info = _ok(
        [
            "features",
            wide,
            "-m",
            "shapes-yolov8n",
            "-l",
            "model.0",
            "-c",
            "1",
            "--cell",
            "64",
            "-o",
            str(tmp_path / "wide-out.png"),
        ]
    )
    assert info["input"]["shape"] == [3, 256, 256] and "letterboxed to 256x256" in info["input"]["as_seen"]
    assert _grey_rows(tmp_path / "wide-out.png") >= 2 * 15  # 16 grey rows above and below the 64-px input cell

    square = str(_image(tmp_path / "square.png", 48, 48))
    _ok(
        [
            "features",
            square,
            "-m",
            "shapes-yolov8n",
            "-l",
            "model.0",
            "-c",
            "1",
            "--cell",
            "64",
            "-o",
            str(tmp_path / "square-out.png"),
        ]
    )
    assert _grey_rows(tmp_path / "square-out.png") == 0


def test_a_shared_yolo_activation_is_refused_with_its_block(tmp_path):
    img = str(_image(tmp_path / "pic.png", 16, 16))
    message = cli_error(
        runner.invoke(
            app, ["features", img, "-m", "shapes-yolov8n", "-l", "model.0.act", "-o", str(tmp_path / "x.png")]
        ),
        2,
    )
    assert "shared" in message and "model.0" in message and not (tmp_path / "x.png").exists()


class _Recorder:
    """Every string drawn on a figure, with where and in which font."""

    def __init__(self, monkeypatch):
        self.drawn: list[tuple[float, float, str, object]] = []
        real = ImageDraw.ImageDraw.text

        def text(draw, xy, text, *args, **kwargs):
            self.drawn.append((xy[0], xy[1], text, kwargs.get("font")))
            return real(draw, xy, text, *args, **kwargs)

        monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)

    def check_inside(self, width: int) -> None:
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        for x, _, text, font in self.drawn:
            assert x >= 0 and x + measure.textlength(text, font=font) <= width, (text, width)


def test_captions_wrap_and_are_never_cut(tmp_path, monkeypatch):
    long_layer = "decoder.blocks.0.attention2.attention"
    cell = np.zeros((4, 4, 3), np.uint8)
    title = f"{long_layer} (Identity) · 64x8x8 · receptive field 703px · 1 most active of 64 channels"
    unbroken = "x" * 400  # wider than any figure may grow: broken inside the word, not cut
    rec = _Recorder(monkeypatch)
    labels = [f"#{i}" for i in range(16)]
    figure = render(
        [Panel(title, [cell], ["#0"]), Panel(unbroken, [cell] * 16, labels)],
        cell=8,
        columns=16,
        heading=f"{long_layer}: feature maps",
    )
    rec.check_inside(figure.width)
    texts = [t for _, _, t, _ in rec.drawn]
    assert "".join(texts).replace(" ", "").count(title.replace(" ", "")) == 1  # every character, in order
    assert "".join(t for t in texts if set(t) == {"x"}) == unbroken
    assert sum(set(t) == {"x"} for t in texts) > 1
    grid = [(x, t, font) for x, _, t, font in rec.drawn if t.startswith("#")][-16:]  # the 8-px cells' labels
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert [t for _, t, _ in grid] == labels
    assert all(b[0] - a[0] >= measure.textlength(a[1], font=a[2]) for a, b in itertools.pairwise(grid))  # no overlap


def test_features_caption_with_a_long_layer_name_fits(tmp_path, monkeypatch):
    img = str(_image(tmp_path / "pic.png", 20, 30))
    rec = _Recorder(monkeypatch)
    out = tmp_path / "long.png"
    info = _ok(
        [
            "features",
            img,
            "-m",
            "shapes-unet",
            "-l",
            "decoder.blocks.0.attention2.attention",
            "-c",
            "1",
            "--cell",
            "16",
            "-o",
            str(out),
        ]
    )
    width = Image.open(out).width
    rec.check_inside(width)
    drawn = " ".join(t for _, _, t, _ in rec.drawn)
    assert "decoder.blocks.0.attention2.attention" in drawn and "channels" in drawn
    assert "as the model sees it: letterboxed to 128x128" in drawn and info["input"]["shape"] == [3, 128, 128]


def test_cached_ultralytics_name_and_a_yolo_weights_file(tmp_path, monkeypatch):
    from cnnkit.models.hub import bundled_path

    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNKIT_CACHE", str(cache))
    missing = cli_error(runner.invoke(app, ["filters", "yolov8n.pt", "-o", str(tmp_path / "a.png")]), 1)
    assert "yolov8n.pt" in missing and "download" in missing
    (cache / "ultralytics" / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundled_path("shapes-yolov8n.pt"), cache / "ultralytics" / "weights" / "yolov8n.pt")
    info = _ok(["filters", "yolov8n.pt", "--cell", "8", "-o", str(tmp_path / "a.png")])
    assert info["model"] == "yolov8n.pt" and info["layer"] == "model.0.conv" and info["shape"] == [16, 3, 3, 3]

    mine = tmp_path / "best.pt"
    shutil.copyfile(bundled_path("shapes-yolov8n.pt"), mine)
    img = str(_image(tmp_path / "pic.png", 16, 16))
    got = _ok(
        [
            "features",
            img,
            "--weights",
            str(mine),
            "-l",
            "model.0",
            "-c",
            "1",
            "--cell",
            "16",
            "-o",
            str(tmp_path / "b.png"),
        ]
    )
    assert got["model"] == "best" and got["input"]["shape"] == [3, 256, 256]  # the trained size, from the file
