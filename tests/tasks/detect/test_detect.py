"""``cnnkit detect``: records, pictures, label files, crops, COCO output, models and offline behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import validate_record
from tests.fixtures.detect import cross_class_overlap, error_text, iou, is_usage_error, upscaled_jpeg

runner = CliRunner()


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _check_detect_record(rec: dict) -> None:
    validate_record(rec)
    assert rec["task"] == "detect"
    for p in rec["predictions"]:
        assert set(p) == {"label", "class_id", "score", "box"}
        x1, y1, x2, y2 = p["box"]
        assert 0 <= x1 <= x2 <= rec["width"] and 0 <= y1 <= y2 <= rec["height"]
        assert 0.0 <= p["score"] <= 1.0


def test_detect_bundled_finds_the_shapes(scenes):
    folder, truth = scenes
    result = runner.invoke(app, ["detect", str(folder), "--format", "jsonl"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = sorted(_jsonl(result.stdout), key=lambda r: r["path"])
    assert len(records) == 4
    found = total = 0
    for rec, objects in zip(records, truth):
        _check_detect_record(rec)
        assert rec["model"] == "shapes-yolov8n"
        for obj in objects:  # a shape counts as found with its own label and a box at IoU > 0.5
            total += 1
            found += any(p["label"] == obj.label and iou(p["box"], obj.box) > 0.5 for p in rec["predictions"])
    assert found >= 0.8 * total


def test_detect_boxes_are_in_original_pixels(scenes, tmp_path):
    """A 1024 px JPEG (a 256 px scene scaled 4×) gets the scene's boxes scaled 4×, in its own pixels."""
    import cnnkit
    from cnnkit.data.shapes import scene
    from tests.fixtures.detect import UNSEEN_SEED

    folder, _ = scenes
    small = cnnkit.detect(str(folder / "scene_0.png"), conf=0.5)[0]
    big = upscaled_jpeg(tmp_path / "big.jpg", scene(UNSEEN_SEED, 0, size=256).image, 4)
    rec = cnnkit.detect(str(big), conf=0.25)[0]
    assert (rec.width, rec.height) == (1024, 1024) and small.predictions
    for p in small.predictions:
        target = [v * 4 for v in p["box"]]
        assert any(q["label"] == p["label"] and iou(q["box"], target) > 0.8 for q in rec.predictions)


def test_detect_matches_ultralytics_predict(scenes):
    """Same weights, same images: cnnkit's batched path gives ultralytics' own boxes."""
    import cnnkit
    from cnnkit import ultralytics_adapter
    from cnnkit.models.hub import bundled_path

    folder, _ = scenes
    paths = sorted(str(p) for p in folder.glob("*.png"))
    ours = cnnkit.detect(paths, batch_size=3)
    theirs = ultralytics_adapter.yolo(bundled_path("shapes-yolov8n.pt")).predict(
        paths, imgsz=256, conf=0.25, iou=0.7, verbose=False
    )
    for rec, res in zip(ours, theirs):
        ref = sorted(zip(res.boxes.conf.tolist(), res.boxes.cls.tolist(), res.boxes.xyxy.tolist()), reverse=True)
        got = sorted((p["score"], p["class_id"], p["box"]) for p in rec.predictions)[::-1]
        assert len(got) == len(ref)
        for (s1, c1, b1), (s2, c2, b2) in zip(got, ref):
            assert c1 == int(c2) and abs(s1 - s2) < 0.02 and np.allclose(b1, b2, atol=1.5)


def test_detect_matches_ultralytics_predict_on_images_that_are_not_square(scenes, tmp_path):
    """`yolo predict` pads a .pt model's input only to the stride (rect): on a 641×479 or a tall image cnnkit's
    boxes were up to 6 px off, with a box more or less, while it padded every image to a square."""
    import cnnkit
    from cnnkit import ultralytics_adapter
    from cnnkit.models.hub import bundled_path

    folder, _ = scenes
    paths = []
    for i, source in enumerate(sorted(folder.glob("*.png"))[:3]):
        scene = Image.open(source).convert("RGB")
        odd = tmp_path / f"odd_{i}.png"
        scene.resize((641, 479)).save(odd)
        tall = Image.new("RGB", (200, 900), (128, 128, 128))
        tall.paste(scene.resize((200, 200)), (0, 600))
        tall.save(tmp_path / f"tall_{i}.png")
        paths += [str(odd), str(tmp_path / f"tall_{i}.png")]
    ours = cnnkit.detect(paths, batch_size=4, backend="torch")
    yolo = ultralytics_adapter.yolo(bundled_path("shapes-yolov8n.pt"))
    # one image per call, as `yolo predict source=DIR` reads a folder (a list of mixed sizes it pads square)
    theirs = [yolo.predict(p, imgsz=256, conf=0.25, iou=0.7, verbose=False)[0] for p in paths]
    assert sum(len(r.predictions) for r in ours) > 0
    for rec, res in zip(ours, theirs):
        ref = sorted(zip(res.boxes.conf.tolist(), res.boxes.cls.tolist(), res.boxes.xyxy.tolist()), reverse=True)
        got = sorted((p["score"], p["class_id"], p["box"]) for p in rec.predictions)[::-1]
        assert len(got) == len(ref), rec.path
        for (s1, c1, b1), (s2, c2, b2) in zip(got, ref):
            assert c1 == int(c2) and abs(s1 - s2) < 0.02 and np.allclose(b1, b2, atol=1.0)


def test_detect_save_txt_crop_and_no_save(scenes, tmp_path):
    folder, _ = scenes
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "detect",
            str(folder / "scene_0.png"),
            "--save-dir",
            str(out),
            "--no-save",
            "--save-txt",
            "--save-crop",
            "--format",
            "json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)[0]
    assert "saved" not in rec and not list(out.glob("*.jpg"))
    lines = Path(rec["label_file"]).read_text().splitlines()
    assert len(lines) == len(rec["predictions"]) > 0
    cls, cx, cy, w, h = lines[0].split()  # a label file, as ultralytics' reader takes it
    p = rec["predictions"][0]
    assert int(cls) == p["class_id"] and abs(float(cx) * 256 - (p["box"][0] + p["box"][2]) / 2) < 0.01
    scored = runner.invoke(
        app,
        ["detect", str(folder / "scene_0.png"), "--save-dir", str(out), "--exist-ok", "--save-txt", "--save-conf"],
        catch_exceptions=False,
    )
    assert scored.exit_code == 0, scored.output
    assert [float(line.split()[5]) for line in Path(rec["label_file"]).read_text().splitlines()] == [
        pytest.approx(q["score"], abs=1e-6) for q in rec["predictions"]
    ]
    assert len(rec["crops"]) == len(rec["predictions"])
    for crop, p in zip(rec["crops"], rec["predictions"]):
        assert Path(crop).is_file() and Path(crop).parent.name == p["label"]


def test_detect_save_pictures(scenes, tmp_path, monkeypatch):
    folder, _ = scenes
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["detect", str(folder / "scene_1.png"), "--save", "--format", "jsonl"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rec = _jsonl(result.stdout)[0]
    picture = tmp_path / rec["saved"]
    assert picture.parent == tmp_path / "runs" / "detect" / "exp" and picture.is_file()
    from PIL import Image

    with Image.open(picture) as img:
        assert img.size == (256, 256)
        # coloured box outlines differ from the plain scene
        assert (
            np.abs(
                np.asarray(img, dtype=int) - np.asarray(Image.open(folder / "scene_1.png").convert("RGB"), dtype=int)
            ).max()
            > 60
        )


def test_detect_format_coco(scenes, tmp_path):
    folder, _ = scenes
    out = tmp_path / "results.json"
    result = runner.invoke(
        app, ["detect", str(folder), "--format", "coco", "--output", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    items = json.loads(out.read_text())
    assert items and {"image_id", "category_id", "bbox", "score"} <= set(items[0])
    assert {i["image_id"] for i in items} == {1, 2, 3, 4}
    assert all(1 <= i["category_id"] <= 6 and i["bbox"][2] > 0 for i in items)


def test_detect_classes_conf_max_det(scenes):
    folder, _ = scenes
    args = ["detect", str(folder), "--format", "jsonl"]
    everything = [p for r in _jsonl(runner.invoke(app, args, catch_exceptions=False).stdout) for p in r["predictions"]]
    wanted = everything[0]["label"]
    only = runner.invoke(app, [*args, "--classes", wanted], catch_exceptions=False)
    kept = [p for r in _jsonl(only.stdout) for p in r["predictions"]]
    assert kept and all(p["label"] == wanted for p in kept)
    assert len(kept) == sum(p["label"] == wanted for p in everything)
    by_id = runner.invoke(app, [*args, "--classes", str(everything[0]["class_id"])], catch_exceptions=False)
    assert [r["predictions"] for r in _jsonl(by_id.stdout)] == [r["predictions"] for r in _jsonl(only.stdout)]
    capped = _jsonl(runner.invoke(app, [*args, "--max-det", "1", "--conf", "0.5", "--iou", "0.5"]).stdout)
    assert all(len(r["predictions"]) <= 1 and all(p["score"] >= 0.5 for p in r["predictions"]) for r in capped)
    bad = runner.invoke(app, [*args, "--classes", "giraffe"])
    assert is_usage_error(bad) and "giraffe" in error_text(bad)


def test_agnostic_nms_leaves_no_two_classes_on_one_object(scenes):
    folder, _ = scenes
    args = ["detect", str(folder), "--format", "jsonl", "--conf", "0.01", "--iou", "0.5"]
    by_class = _jsonl(runner.invoke(app, args, catch_exceptions=False).stdout)
    assert cross_class_overlap(by_class) > 0.5  # low-score second guesses at another class's box
    agnostic = _jsonl(runner.invoke(app, [*args, "--agnostic-nms"], catch_exceptions=False).stdout)
    assert cross_class_overlap(agnostic) <= 0.5 + 1e-6
    assert 0 < sum(len(r["predictions"]) for r in agnostic) < sum(len(r["predictions"]) for r in by_class)


def test_detect_imgsz_and_failed_input(scenes, tmp_path):
    folder, _ = scenes
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    result = runner.invoke(
        app, ["detect", str(folder / "scene_2.png"), str(broken), "--imgsz", "320", "--format", "jsonl"]
    )
    assert result.exit_code == 1
    good, bad = _jsonl(result.stdout)
    _check_detect_record(good)
    assert good["predictions"] and bad["error"] and bad["predictions"] == []


def test_ultralytics_name_offline_is_a_clear_error(scenes, tmp_path, monkeypatch):
    folder, _ = scenes
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cnnkit-cache"
    monkeypatch.setenv("CNNKIT_CACHE", str(cache))
    result = runner.invoke(app, ["detect", str(folder / "scene_0.png"), "--model", "yolov8n.pt"])
    assert result.exit_code == 1
    assert "yolov8n.pt" in error_text(result) and "download" in error_text(result)
    assert not list(tmp_path.rglob("yolov8n.pt"))  # nothing half-downloaded is left behind


def test_local_pt_and_weights_option(scenes, tmp_path):
    """A local ultralytics .pt loads by --model PATH and by --weights PATH."""
    import shutil

    from cnnkit.models.hub import bundled_path

    folder, _ = scenes
    local = tmp_path / "mine.pt"
    shutil.copyfile(bundled_path("shapes-yolov8n.pt"), local)
    for opts in (["--model", str(local)], ["--weights", str(local)]):
        result = runner.invoke(
            app, ["detect", str(folder / "scene_3.png"), *opts, "--format", "jsonl"], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        rec = _jsonl(result.stdout)[0]
        assert rec["model"] == "mine" and rec["predictions"]


def test_adapter_sets_offline_defaults_without_clobbering(tmp_path):
    """In a fresh process: env defaults set (a user's value kept), font placed (without importing matplotlib,
    0.3 s of every run's start-up), analytics off, threads kept."""
    code = (
        "import os, sys, torch; torch.set_num_threads(2)\n"
        "from cnnkit import ultralytics_adapter; ultralytics_adapter.ultralytics()\n"
        "from ultralytics.utils import SETTINGS, USER_CONFIG_DIR\n"
        "print(USER_CONFIG_DIR / 'Arial.ttf')\n"
        "print(os.environ['YOLO_OFFLINE'], os.environ['YOLO_AUTOINSTALL'], os.environ['YOLO_CONFIG_DIR'])\n"
        "print(SETTINGS['sync'], (USER_CONFIG_DIR / 'Arial.ttf').is_file(), torch.get_num_threads(), "
        "'OMP_NUM_THREADS' in os.environ, 'matplotlib' in sys.modules)\n"
        "import json; saved = json.loads(SETTINGS.file.read_text())\n"
        "print(sorted(k for k in ultralytics_adapter.REPORTERS if SETTINGS[k] or saved[k] != SETTINGS.defaults[k]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "OMP_"))}
    env.update(YOLO_CONFIG_DIR=str(tmp_path / "mine"), CNNKIT_CACHE=str(tmp_path / "cache"), YOLO_OFFLINE="true")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr
    first, second, reporters = out.stdout.strip().splitlines()[-3:]
    assert first.split() == ["true", "false", str(tmp_path / "mine")]
    assert second.split() == ["False", "True", "2", "False", "False"]
    assert reporters == "[]"  # W&B, Comet, MLflow, Ray Tune… off in this process, the user's settings file kept
    font = Path(out.stdout.strip().splitlines()[-4])
    assert font.read_bytes()[:4] == b"\x00\x01\x00\x00"  # matplotlib's DejaVuSans, a TrueType file


def test_detect_subprocess_smoke(scenes):
    folder, _ = scenes
    out = subprocess.run(
        [sys.executable, "-m", "cnnkit", "detect", str(folder / "scene_0.png"), "--format", "jsonl", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    _check_detect_record(rec)
    assert rec["predictions"]


def test_registry_lists_detectors():
    from cnnkit.models.registry import list_models

    names = {s.name: s for s in list_models(task="detect")}
    assert names["shapes-yolov8n"].source == "bundled"
    assert names["yolov8n.pt"].source == "ultralytics" and names["yolo11n.pt"].source == "ultralytics"
    assert names["fasterrcnn_resnet50_fpn_v2"].source == "torchvision"
    assert names["fasterrcnn_mobilenet_v3_large_320_fpn"].source == "torchvision"


def test_yolo_builder_random_weights_forward():
    import torch

    from cnnkit.models.registry import get_spec

    net = get_spec("shapes-yolov8n").builder(num_classes=5).eval()
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, 64, 64))
    preds = out[0] if isinstance(out, (list, tuple)) else out
    assert preds.shape[0] == 1 and preds.shape[1] == 4 + 5


@pytest.mark.parametrize("bad", [["--conf", "1.5"], ["--iou", "-0.1"]])
def test_detect_rejects_bad_thresholds(scenes, bad):
    folder, _ = scenes
    result = runner.invoke(app, ["detect", str(folder), *bad])
    assert result.exit_code == 2


@pytest.mark.parametrize("task", ["detect", "track"])
@pytest.mark.parametrize(("option", "value"), [("conf", 1.5), ("iou", -0.1)])
def test_api_thresholds_fail_before_a_model_loads(task, option, value):
    """detect and track check ``conf`` and ``iou`` by one rule, naming the option and its value, before the
    model is looked up (an unknown model would be another error)."""
    import cnnkit
    from cnnkit.errors import OptionError

    with pytest.raises(OptionError) as err:
        cnnkit.load(task, model="no-such-model", **{option: value})
    assert str(err.value) == f"{option} {value}: must be between 0 and 1"


def test_ultralytics_name_cached_works_offline_and_download_goes_to_cache(scenes, tmp_path, monkeypatch):
    """A hub name found in cnnkit's cache loads offline; when missing, cnnkit downloads into that cache."""
    import shutil

    import cnnkit
    from cnnkit import ultralytics_adapter
    from cnnkit.models.describe import describe
    from cnnkit.models.hub import bundled_path
    from cnnkit.models.registry import get_spec

    folder, _ = scenes
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    ultralytics_adapter.ultralytics()
    import ultralytics.utils.downloads as downloads

    fetched = []

    def fake_download(file, *args, **kwargs):  # stands in for the network
        if Path(file).is_file():
            return str(file)
        fetched.append(Path(file))
        shutil.copyfile(bundled_path("shapes-yolov8n.pt"), file)
        return str(file)

    monkeypatch.setattr(downloads, "attempt_download_asset", fake_download)
    assert describe(get_spec("yolo11n.pt"))["available"] is False
    rec = cnnkit.detect(str(folder / "scene_0.png"), model="yolo11n.pt", imgsz=256)[0]
    assert fetched == [tmp_path / "cache" / "ultralytics" / "weights" / "yolo11n.pt"]
    assert rec.ok and rec.model == "yolo11n.pt"
    assert describe(get_spec("yolo11n.pt"))["available"] is True
    cnnkit.detect(str(folder / "scene_0.png"), model="yolo11n.pt", imgsz=256)
    assert len(fetched) == 1  # the second run used the cache


def test_an_offline_hub_name_is_one_plain_line(tmp_path, monkeypatch):
    """ultralytics words its download failure with an emoji first; the error line carries its words only."""
    from cnnkit import ultralytics_adapter

    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    ultralytics_adapter.ultralytics()
    import ultralytics.utils.downloads as downloads

    def offline(file, *args, **kwargs):
        raise ConnectionError("❌  Download failure for https://github.com/x/yolov8x.pt. Environment may be offline.")

    monkeypatch.setattr(downloads, "attempt_download_asset", offline)
    result = runner.invoke(app, ["detect", str(tmp_path / "none.png"), "--model", "yolov8x.pt"])
    assert result.exit_code == 1 and "(Download failure for https://github.com/x/yolov8x.pt" in error_text(result)
    assert "❌" not in result.output


def test_missing_or_broken_pt_is_a_clear_error(scenes, tmp_path):
    folder, _ = scenes
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    for model, text in ((str(tmp_path / "runs" / "best.pt"), "no such file"), (str(broken), "not a")):
        result = runner.invoke(app, ["detect", str(folder / "scene_0.png"), "--model", model])
        assert result.exit_code == 1 and model in error_text(result) and text in error_text(result)


def test_a_drafted_jpeg_maps_back_by_its_draft_factor(tmp_path):
    """A 2049 px JPEG drafted at 1/s has ceil(2049/s) px, each s of the original's: masks scaled by 2049/257
    instead ended up to 7 px off towards the top left at the far edge, and a draft resized on its own rounded
    size shifted by up to a pixel. Reference: the full decode, as a PNG. Detection never drafts (its reference
    pipeline resizes without antialiasing): the JPEG gives the boxes of its full decode, as ``yolo predict``."""
    import cnnkit
    from cnnkit.data.shapes import scene
    from cnnkit.io.decode import decode
    from cnnkit.tasks.segment.predict import Segmenter

    shapes = Image.fromarray(scene(11, 0, size=256).image).resize((1024, 1024), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (2049, 2049), (200, 200, 200))
    canvas.paste(shapes, (1025, 1025))
    canvas.save(tmp_path / "far.jpg", quality=97)
    Image.fromarray(decode(str(tmp_path / "far.jpg")).rgb).save(tmp_path / "full.png")
    got, ref = cnnkit.detect([str(tmp_path / "far.jpg"), str(tmp_path / "full.png")], backend="torch", imgsz=256)
    assert got.predictions and [(p["label"], p["box"]) for p in got.predictions] == [
        (p["label"], p["box"]) for p in ref.predictions
    ]
    seg = Segmenter.load(backend="torch", imgsz=256)
    assert decode(str(tmp_path / "far.jpg"), min_side=seg.min_side).drafted  # the segmenter reads a draft of it
    mask = seg([str(tmp_path / "far.jpg")])[0].result.mask
    full = seg([str(tmp_path / "full.png")])[0].result.mask
    assert mask.shape == full.shape == (2049, 2049) and (full > 0).sum() > 10_000
    assert np.allclose(np.argwhere(mask > 0).mean(0), np.argwhere(full > 0).mean(0), atol=0.5)
    assert ((mask > 0) & (full > 0)).sum() / ((mask > 0) | (full > 0)).sum() > 0.97


@pytest.mark.parametrize(
    ("names", "said"),
    [
        (
            {0: "circle", 1: "\x1b[31mred", 2: "triangle", 3: "star", 4: "hexagon"},
            "a class name has control characters",
        ),
        ({5: "a", 6: "b", 7: "c", 8: "d", 9: "e"}, "its class names do not fit its classes"),
        (["a", "b"], "its head predicts 5 classes, its names list 2"),
    ],
)
def test_an_ultralytics_file_whose_names_do_not_fit_is_one_line(names, said, tmp_path):
    """A stranger's YOLO .pt: names numbered 5-9 were a KeyError traceback from ultralytics, two names for a
    five-class head labelled the rest with bare numbers (exit 0), an escape sequence reached the table raw."""
    import torch

    import cnnkit
    from cnnkit.ultralytics_adapter import ultralytics

    ultralytics()
    ckpt = torch.load(Path(cnnkit.__file__).parent / "weights" / "shapes-yolov8n.pt", weights_only=False)
    ckpt["model"].names = names
    path = tmp_path / "named.pt"
    torch.save(ckpt, path)
    image = Path(cnnkit.__file__).parents[1] / "samples" / "scene_0.png"
    result = CliRunner().invoke(app, ["detect", str(image), "--weights", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {path}: {said}")


def test_an_ultralytics_models_names_are_read_once_and_bounded():
    """``YOLO.names`` checks the whole dict on every read: a loop over it was quadratic (20,000 names: 50 s)."""
    from cnnkit.errors import UnsafeCheckpoint
    from cnnkit.models.checkpoint import MAX_LABELS
    from cnnkit.ultralytics_adapter import labels_of

    class Model:
        reads = 0

        def __init__(self, n: int) -> None:
            self._names = {i: f"c{i}" for i in range(n)}

        @property
        def names(self) -> dict[int, str]:
            Model.reads += 1
            return dict(self._names)

    assert labels_of(Model(3000))[-1] == "c2999" and Model.reads == 1
    with pytest.raises(UnsafeCheckpoint, match="class names"):
        labels_of(Model(MAX_LABELS + 1))


def test_a_torchvision_state_dict_without_its_architecture_is_one_line(tmp_path):
    """`detect --weights frcnn.pth` (torchvision's own file name) was ultralytics' AssertionError traceback
    ("acceptable suffix is {'.pt'}"), in detect, detect val, export and detect training alike."""
    import torch
    from typer.testing import CliRunner

    from cnnkit.cli import app

    path = tmp_path / "frcnn.pth"
    torch.save({"backbone.body.conv.weight": torch.zeros(1)}, path)
    image = str(Path(__file__).resolve().parents[3] / "samples" / "scene_0.png")
    for args in (["detect", image, "--weights", str(path)], ["export", str(path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "needs its architecture named with --model" in result.stderr, result.output
        assert "Traceback" not in result.output
