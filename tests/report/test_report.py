"""report.html from live records, from a JSON Lines file, with val evidence and explanations (no browser here;
tests/test_report_browser.py opens the page in Chromium)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cnnkit.report.evidence import box_confusion, match, pr_curves
from cnnkit.report.html import Report, from_records_file

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _script(html: str, name: str):
    found = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert found, name
    return json.loads(found.group(1))


def _self_contained(html: str) -> None:
    """No network and no file outside the page: no external src/href, no <link>, no script file."""
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and not re.search(r"<script[^>]+src=", html)


@pytest.fixture(scope="module")
def classified():
    import cnnkit

    paths = [str(SAMPLES / n) for n in ("shape_0_triangle.png", "shape_1_circle.png", "shape_2_square.png")]
    return cnnkit.classify([*paths, str(SAMPLES / "missing.png")], topk=2)


def test_report_of_live_records(tmp_path, classified):
    out = tmp_path / "report.html"
    report = Report(out, info={"model": "shapes-cnn", "device": "cpu"})
    for r in classified:
        report.add(r)
    assert report.write() == out
    html = out.read_text()
    _self_contained(html)
    entries, thumbs = _script(html, "entries"), _script(html, "thumbs")
    assert [e["n"] for e in entries] == [
        "shape_0_triangle.png",
        "shape_1_circle.png",
        "shape_2_square.png",
        "missing.png",
    ]
    assert [e["l"][0] for e in entries[:3]] == ["triangle", "circle", "square"]
    assert entries[3]["ok"] is False and thumbs[3] == "" and "no such file" in html
    for src in thumbs[:3]:
        data = base64.b64decode(src.removeprefix("data:image/webp;base64,"))
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert "Predictions per class" in html and "<svg" in html and "shapes-cnn" in html
    with pytest.raises(Exception, match="already exists"):
        Report(out)


def test_report_from_a_jsonl_file_with_thumbnails_in_a_folder(tmp_path):
    import cnnkit
    from cnnkit.io.writers import RecordWriter

    records = cnnkit.detect([str(SAMPLES / "scene_1.png"), str(SAMPLES / "scene_0.png")])
    writer = RecordWriter("jsonl", str(tmp_path / "run.jsonl"))
    for r in records:
        writer.write(r)
    writer.close()
    out = from_records_file(tmp_path, assets="folder")
    assert out == tmp_path / "report.html"
    html = out.read_text()
    _self_contained(html)
    thumbs = _script(html, "thumbs")
    assert thumbs == ["report_files/000000.webp", "report_files/000001.webp"]
    assert all((tmp_path / t).stat().st_size > 200 for t in thumbs)
    entries = _script(html, "entries")
    assert sorted(entries[0]["l"]) == sorted(p["label"] for p in records[0].predictions)
    # the picture drawn from the JSON Lines file is the one the live result draws
    from PIL import Image

    from cnnkit.report.thumbs import result_from_dict, thumbnail

    again = result_from_dict(records[0].to_dict())
    rgb = np.asarray(Image.open(SAMPLES / "scene_1.png").convert("RGB"))
    assert np.array_equal(np.asarray(thumbnail(rgb, again)), np.asarray(thumbnail(rgb, records[0].result)))
    with pytest.raises(Exception, match="already exists"):
        from_records_file(tmp_path / "run.jsonl")


def test_thumbnail_captions_are_the_same_size_for_a_small_and_a_large_picture():
    """A 64-pixel picture is enlarged to the thumbnail before drawing, as a large one is shrunk: its caption is
    no larger against the picture (the card shows both at the same size) than a photo's."""
    from cnnkit.report.thumbs import THUMB_SIDE, thumbnail
    from cnnkit.results import Box, Boxes

    def caption_extent(w: int, h: int) -> tuple[tuple[int, int], tuple[int, int]]:
        picture = np.full((h, w, 3), 128, np.uint8)
        result = Boxes([Box("square", 0, 0.82, (w * 0.1, h * 0.3, w * 0.6, h * 0.9))], w, h)
        thumb = np.asarray(thumbnail(picture, result))
        ys, xs = np.nonzero((thumb > 200).all(axis=2))  # the white caption text on a grey picture
        return thumb.shape[1::-1], (int(xs.max() - xs.min()), int(ys.max() - ys.min()))

    (small_size, small_text), (large_size, large_text) = caption_extent(64, 48), caption_extent(640, 480)
    assert small_size == large_size == (THUMB_SIDE, THUMB_SIDE * 3 // 4)
    assert abs(small_text[0] - large_text[0]) <= 1 and abs(small_text[1] - large_text[1]) <= 1
    assert small_text[0] < THUMB_SIDE / 3  # "square 0.82" takes under a third of the thumbnail's width


def test_match_and_pr_curves():
    truth = [
        {"label": "a", "box": [0, 0, 10, 10]},
        {"label": "a", "box": [20, 20, 30, 30]},
        {"label": "b", "box": [40, 40, 50, 50]},
    ]
    preds = [
        {"label": "a", "score": 0.9, "box": [0, 0, 10, 11]},
        {"label": "a", "score": 0.8, "box": [0, 0, 10, 10]},
        {"label": "b", "score": 0.7, "box": [40, 40, 50, 50]},
        {"label": "a", "score": 0.1, "box": [20, 20, 30, 30]},
    ]
    m = match(preds, truth, conf=0.25)
    assert (m.found, m.false, m.missed) == ([0, 2], [1], [1])
    curves = {c["label"]: c for c in pr_curves([(preds, truth)])}
    assert curves["b"]["ap"] == 1.0
    # a: hits at 0.9 (TP), 0.8 (FP), 0.1 (TP) → precision 1 up to recall 0.5, then 2/3 up to recall 1
    assert curves["a"]["ap"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-3)


def test_box_confusion_counts_as_ultralytics_does():
    """Random scenes with near and far boxes, counted by ultralytics' own ConfusionMatrix (its rows are
    predicted classes; ours are true ones)."""
    import torch
    from ultralytics.utils.metrics import ConfusionMatrix

    labels = ["a", "b", "c"]
    rng = np.random.default_rng(7)
    theirs = ConfusionMatrix(names=dict(enumerate(labels)))
    images = []
    for _ in range(40):
        truth = [
            {"label": labels[rng.integers(3)], "box": [x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30)]}
            for x, y in rng.uniform(0, 100, (rng.integers(0, 5), 2))
        ]
        preds = [
            {
                "label": labels[rng.integers(3)],
                "score": float(rng.uniform()),
                "box": [c + rng.normal(0, 3) for c in t["box"]],
            }
            for t in truth
            if rng.uniform() < 0.8
        ]
        preds += [
            {"label": labels[rng.integers(3)], "score": float(rng.uniform()), "box": [x, y, x + 15, y + 12]}
            for x, y in rng.uniform(0, 100, (rng.integers(0, 3), 2))
        ]
        images.append((preds, truth))
        theirs.process_batch(
            {
                "bboxes": torch.tensor([p["box"] for p in preds], dtype=torch.float32).reshape(-1, 4),
                "conf": torch.tensor([p["score"] for p in preds], dtype=torch.float32),
                "cls": torch.tensor([labels.index(p["label"]) for p in preds], dtype=torch.float32),
            },
            {
                "bboxes": torch.tensor([t["box"] for t in truth], dtype=torch.float32).reshape(-1, 4),
                "cls": torch.tensor([labels.index(t["label"]) for t in truth], dtype=torch.float32),
            },
            conf=0.25,
            iou_thres=0.5,
        )
    ours = box_confusion(images, labels)
    assert ours["labels"] == ours["columns"] == [*labels, "background"]
    assert np.array_equal(np.array(ours["matrix"]), theirs.matrix.T)
    assert sum(map(sum, ours["matrix"])) > 60  # the scenes were not empty


def test_val_report_of_a_detector_shows_metrics_curves_and_mistakes(tmp_path):
    from cnnkit.data.export import export_shapes
    from cnnkit.tasks.detect.val import validate

    export_shapes(tmp_path / "ds", "yolo", n=4, seed=4242, imgsz=128, val_fraction=0.75)
    report = Report(tmp_path / "val.html", task="detect")
    metrics = validate(
        tmp_path / "ds" / "data.yaml",
        compare=False,
        batch_size=4,
        workers=1,
        on_record=lambda r, truth: report.add(r, truth=truth),
    )
    report.set_metrics(metrics)
    report.write()
    html = (tmp_path / "val.html").read_text()
    entries = _script(html, "entries")
    assert len(entries) == metrics["images"] == 3
    assert all("v" in e and e["v"]["truth"] for e in entries)
    assert "Precision–recall" in html and "<polyline" in html and "mAP50" in html and "Worst images" in html
    assert sum(len(e["v"]["truth"]) for e in entries) == metrics["instances"]
    confusion = metrics["confusion"]
    assert confusion["labels"][-1] == "background" and 'class="confusion"' in html and "background row" in html
    true_per_class = np.array(confusion["matrix"])[:-1].sum(1)  # every labelled box is in its class's row once
    assert true_per_class.tolist() == [d["instances"] for d in metrics["per_class"].values()]
    assert metrics["backend"] and metrics["device"] == "cpu"
    assert isinstance(metrics["precision"], float) and metrics["dtype"] == "fp32"  # box precision, number format


def test_detect_val_names_the_compiled_runtime_it_ran(tmp_path, monkeypatch):
    """A YOLO compiled by --backend scores as that runtime, and the box precision does not hide the dtype."""
    pytest.importorskip("onnxruntime")
    from cnnkit.data.export import export_shapes
    from cnnkit.eval.report import runtime_note
    from cnnkit.tasks.detect.val import validate

    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    export_shapes(tmp_path / "ds", "yolo", n=4, seed=4242, imgsz=128, val_fraction=0.75)
    metrics = validate(tmp_path / "ds" / "data.yaml", compare=False, batch_size=4, workers=1, backend="onnxruntime")
    assert metrics["backend"] == "onnxruntime" and metrics["dtype"] == "fp32"
    assert runtime_note(metrics) == "backend onnxruntime on cpu (fp32)"


def test_val_report_of_a_classifier_has_its_confusion_matrix(tmp_path, shapes_images):
    import shutil

    import cnnkit
    from cnnkit.tasks.classify.val import evaluate_folder

    for path in sorted(shapes_images.iterdir())[:6]:
        label = path.stem.split("_")[-1]
        (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "data" / label / path.name)
    report = Report(tmp_path / "val.html", task="classify")
    predictor = cnnkit.load("classify")
    metrics = evaluate_folder(
        predictor, tmp_path / "data", batch_size=4, workers=1, on_record=lambda r, truth: report.add(r, truth=truth)
    )
    report.set_metrics(metrics)
    html = report.render()
    assert "Confusion matrix" in html and 'class="confusion"' in html
    entries = _script(html, "entries")
    wrong = [e for e in entries if e["v"]["bad"]]
    assert len(wrong) == metrics["images"] - round(metrics["top1"] * metrics["images"])
    curves = {c["label"]: c for c in report.curves}  # one class against the rest, over the top-5 scores
    assert set(curves) == {
        label for label, row in zip(metrics["confusion"]["labels"], metrics["confusion"]["matrix"]) if sum(row)
    }
    assert "Precision–recall (one class against the rest" in html and "<polyline" in html


def test_explanations_look_at_the_object_and_reach_the_report(tmp_path):
    from cnnkit.errors import OptionError
    from cnnkit.io.decode import decode
    from cnnkit.report.explain import explain

    scene = str(SAMPLES / "scene_0.png")
    (x,) = list(explain([scene], task="detect", methods=["gradcam"], max_boxes=1))
    assert x.target == "star" and x.box is not None and x.heatmap.shape == (256, 256)
    x1, y1, x2, y2 = (round(v) for v in x.box)
    inside = x.heatmap[y1:y2, x1:x2].mean()
    outside = (x.heatmap.sum() - x.heatmap[y1:y2, x1:x2].sum()) / (x.heatmap.size - (y2 - y1) * (x2 - x1))
    assert inside > 2 * outside  # the map explains the box, not the background

    maps = list(explain([str(SAMPLES / "shape_1_circle.png")], methods=["gradcam", "eigencam"], target="square"))
    assert [(m.method, m.target) for m in maps] == [("gradcam", "square"), ("eigencam", "square")]
    assert all(m.heatmap.min() >= 0 and m.heatmap.max() <= 1 for m in maps)
    report = Report(tmp_path / "r.html")
    for m in [x, *maps]:
        report.add_explanation(m.path, m.method, m.target, m.overlay(decode(m.path).rgb), m.score)
    html = report.render()
    assert html.count('<figure class="card"><img src="data:image/webp') == 3 and "Explain" in html
    with pytest.raises(OptionError, match="target"):
        list(explain([scene], target="unicorn"))
    with pytest.raises(OptionError, match="methods"):
        list(explain([scene], methods=["nope"]))


def test_a_detectors_map_lies_on_a_picture_that_is_not_square(tmp_path):
    """YOLO is fed a letterbox padded to the stride (170x256 -> 192x256), not a square: the map is that input's
    Grad-CAM cut at its true padding (it assumed a square input: maps 32 px off and stretched on wide photos)."""
    import numpy as np
    import torch
    from PIL import Image
    from pytorch_grad_cam import GradCAM

    from cnnkit import api
    from cnnkit.report import explain as ex

    wide = tmp_path / "wide.png"
    Image.open(SAMPLES / "scene_1.png").convert("RGB").crop((0, 0, 256, 170)).save(wide)
    rgb = np.asarray(Image.open(wide))
    (x,) = list(ex.explain([str(wide)], task="detect", methods=["gradcam"], max_boxes=1))
    assert x.heatmap.shape == (170, 256) and x.box is not None
    backend = api.load("detect", backend="torch").backend
    fed = backend.preprocess(rgb)[None].float().div(255)
    assert tuple(fed.shape[-2:]) == (192, 256)
    r = min(backend.imgsz / 170, backend.imgsz / 256)
    pad = (192 - round(170 * r)) // 2
    net = ex._trainable(backend.net)
    model = ex._RawYolo(net)
    with torch.no_grad():
        raw = model(fed)[0]
    box = [x.box[0] * r, x.box[1] * r + pad, x.box[2] * r, x.box[3] * r + pad]
    target = ex._AnchorScore(ex._anchor_of(raw, box, x.class_id), x.class_id)
    with GradCAM(model=model, target_layers=[net.model[i] for i in net.model[-1].f]) as cam:
        grey = cam(input_tensor=fed, targets=[target])[0]
    inner = grey[pad : pad + round(170 * r), : round(256 * r)].astype(np.float32)
    reference = np.clip(np.asarray(Image.fromarray(inner).resize((256, 170), Image.Resampling.BILINEAR)), 0, 1)
    assert float(np.abs(reference - x.heatmap).mean()) < 0.01


def test_auto_puts_thumbnails_beside_a_big_report(tmp_path, monkeypatch, rgb_image):
    import cnnkit.report.html as html_mod

    monkeypatch.setattr(html_mod, "EMBED_LIMIT", 2)
    rec = {
        "path": str(rgb_image),
        "task": "classify",
        "model": "m",
        "width": 64,
        "height": 48,
        "time_ms": 1.0,
        "error": None,
        "schema_version": 2,
        "predictions": [{"label": "a", "class_id": 0, "score": 0.5}],
    }
    small = Report(tmp_path / "small.html")
    big = Report(tmp_path / "big.html")
    for _ in range(2):
        small.add(rec)
    for _ in range(3):
        big.add(rec)
    assert _script(small.write().read_text(), "thumbs")[0].startswith("data:image/webp;base64,")
    assert _script(big.write().read_text(), "thumbs") == [f"big_files/00000{i}.webp" for i in range(3)]
    assert len(list((tmp_path / "big_files").iterdir())) == 3
    (tmp_path / "big.html").unlink()
    with pytest.raises(Exception, match="big_files: already exists"):  # the page is gone, its folder is not
        Report(tmp_path / "big.html", assets="folder")


def test_a_report_that_fails_to_write_leaves_no_picture_folder_behind(tmp_path, classified, monkeypatch):
    """A full disk mid-write left NAME_files/ half-written, and it blocked the rerun ('already exists')."""
    from cnnkit.errors import CnnkitError
    from cnnkit.report import html as page

    out = tmp_path / "r.html"
    report = Report(out, assets="folder")
    for r in classified:
        report.add(r)
    real = page.atomic_write_text

    def full(*args, **kwargs):
        raise CnnkitError(f"{out}: cannot write (No space left on device)")

    monkeypatch.setattr(page, "atomic_write_text", full)
    with pytest.raises(CnnkitError, match="No space left"):
        report.write()
    assert not (tmp_path / "r_files").exists() and not out.exists()
    monkeypatch.setattr(page, "atomic_write_text", real)
    again = Report(out, assets="folder")  # the rerun is not refused
    for r in classified:
        again.add(r)
    assert again.write() == out and (tmp_path / "r_files").is_dir()
