"""Hand-off formats, each read back by the real reader of that format.

- Label Studio: ``label-studio-converter`` (Label Studio's own export converter) reads the tasks as an
  export and writes COCO; its brush decoder reads the RLE. ``label-studio-sdk`` is not used: it would
  downgrade numpy and OpenCV in this environment.
- CVAT for images 1.1 and Pascal VOC: ``datumaro`` (the library CVAT itself imports and exports with),
  installed without its pins (``.ci/run``: they would downgrade Pillow and OpenCV); the VOC boxes are also
  read by torchvision's ``VOCDetection.parse_voc_xml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from cnnkit.io.handoff import convert, label_studio_tasks, mask_polygons
from cnnkit.results import encode_rle

W, H = 64, 48


def _disc(cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _detect_record(path: str = "imgs/a.png") -> dict:
    return {
        "path": path,
        "task": "detect",
        "model": "m",
        "width": W,
        "height": H,
        "time_ms": 1.0,
        "error": None,
        "schema_version": 2,
        "predictions": [
            {"label": "circle", "class_id": 0, "score": 0.9, "box": [3.2, 4.7, 30.4, 20.1]},
            {"label": "star", "class_id": 2, "score": 0.55, "box": [40.0, 10.0, 63.5, 47.0]},
        ],
    }


def _instance_record() -> dict:
    masks = [_disc(20, 20, 10), _disc(45, 30, 8)]
    preds = []
    for label, cid, m in (("circle", 0, masks[0]), ("square", 1, masks[1])):
        ys, xs = np.nonzero(m)
        preds.append(
            {
                "label": label,
                "class_id": cid,
                "score": 0.8,
                "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                "mask": encode_rle(m),
            }
        )
    return {
        "path": "imgs/b.png",
        "task": "instance",
        "model": "m",
        "width": W,
        "height": H,
        "time_ms": 1.0,
        "error": None,
        "schema_version": 2,
        "predictions": preds,
    }, masks


def _raster(polygon_xy: list[float]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([polygon_xy], H, W))) > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _within_a_pixel(got: np.ndarray, want: np.ndarray) -> None:
    """The same mask within a pixel: every pixel that differs touches the true mask's outline (it lies within
    one pixel of both the mask and the background), and most pixels agree."""
    import cv2

    k = np.ones((3, 3), np.uint8)
    m = want.astype(np.uint8)
    edge = cv2.dilate(m, k).astype(bool) & ~cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    assert not (got ^ want)[~edge].any(), "pixels differ away from the outline"
    assert _iou(got, want) > 0.9


def _segment_record(tmp_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A segment record as a run with a save folder writes it: its class-index PNG named by ``mask``."""
    from PIL import Image

    masks = {"circle": _disc(18, 20, 11), "square": np.zeros((H, W), bool)}
    masks["square"][28:44, 36:58] = True
    index = np.zeros((H, W), np.uint8)
    index[masks["circle"]] = 1
    index[masks["square"]] = 2
    Image.fromarray(index).save(tmp_path / "m.png")
    record = {
        "path": "s.png",
        "task": "segment",
        "model": "m",
        "width": W,
        "height": H,
        "error": None,
        "mask": str(tmp_path / "m.png"),
        "predictions": [
            {"label": "background", "class_id": 0, "pixels": 1, "fraction": 0.8},
            {"label": "circle", "class_id": 1, "pixels": 1, "fraction": 0.1},
            {"label": "square", "class_id": 2, "pixels": 1, "fraction": 0.1},
        ],
    }
    return record, masks


def test_mask_polygons_cover_the_same_pixels():
    m = _disc(30, 22, 12)
    (poly,) = mask_polygons(m)
    back = _raster([c for p in poly for c in p])
    assert _iou(m, back) > 0.93
    ys, xs = np.nonzero(m)  # the outline runs on the pixels' edges: the extent is the mask's, within a pixel
    px, py = np.array(poly).T
    assert abs(px.min() - xs.min()) <= 1 and abs(px.max() - (xs.max() + 1)) <= 1
    assert abs(py.min() - ys.min()) <= 1 and abs(py.max() - (ys.max() + 1)) <= 1


def _ls_export(tasks: list[dict], tmp: Path) -> Path:
    """Label Studio's export shape: each task's predictions taken as its annotation."""
    export = [
        {"id": i + 1, "data": t["data"], "annotations": [{"id": i + 1, "result": t["predictions"][0]["result"]}]}
        for i, t in enumerate(tasks)
    ]
    path = tmp / "export.json"
    path.write_text(json.dumps(export))
    return path


def test_label_studio_rectangles_round_trip_through_its_converter(tmp_path):
    pytest.importorskip("label_studio_converter", reason="label-studio-converter is the reader of this format")
    from label_studio_converter import Converter

    rec = _detect_record()
    written = convert([rec], "labelstudio", tmp_path / "tasks.json")
    tasks = json.loads(written[0].read_text())
    result = tasks[0]["predictions"][0]["result"]
    assert {r["type"] for r in result} == {"rectanglelabels"}
    assert all(r["original_width"] == W and r["original_height"] == H for r in result)
    assert 0 <= result[0]["value"]["x"] <= 100 and tasks[0]["data"]["image"] == "imgs/a.png"
    converter = Converter(written[1].read_text(), str(tmp_path), download_resources=False)
    converter.convert_to_coco(str(_ls_export(tasks, tmp_path)), str(tmp_path / "coco"), is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = sorted((names[a["category_id"]], a["bbox"]) for a in coco["annotations"])
    want = sorted(
        (p["label"], [p["box"][0], p["box"][1], p["box"][2] - p["box"][0], p["box"][3] - p["box"][1]])
        for p in rec["predictions"]
    )
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert np.allclose(g, w, atol=1e-6)


def test_label_studio_polygons_and_brush_round_trip(tmp_path):
    pytest.importorskip("label_studio_converter", reason="label-studio-converter is the reader of this format")
    from label_studio_converter import Converter
    from label_studio_converter.brush import decode_rle

    rec, masks = _instance_record()
    written = convert([rec], "labelstudio", tmp_path / "tasks.json")
    tasks = json.loads(written[0].read_text())
    converter = Converter(written[1].read_text(), str(tmp_path), download_resources=False)
    converter.convert_to_coco(str(_ls_export(tasks, tmp_path)), str(tmp_path / "coco"), is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_label = {names[a["category_id"]]: _raster(a["segmentation"][0]) for a in coco["annotations"]}
    assert set(by_label) == {"circle", "square"}
    _within_a_pixel(by_label["circle"], masks[0])
    _within_a_pixel(by_label["square"], masks[1])

    brush = label_studio_tasks([rec], brush=True)[0]["predictions"][0]["result"]
    assert [r["type"] for r in brush] == ["brushlabels", "brushlabels"]
    for r, m in zip(brush, masks, strict=True):
        decoded = decode_rle(r["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0
        assert np.array_equal(decoded, m)


def test_label_studio_choices_for_classify(tmp_path):
    pytest.importorskip("label_studio_converter", reason="label-studio-converter is the reader of this format")
    from label_studio_converter import Converter

    rec = {
        "path": "x.png",
        "task": "classify",
        "model": "shapes-cnn",
        "width": 8,
        "height": 8,
        "time_ms": 1.0,
        "error": None,
        "schema_version": 2,
        "predictions": [
            {"label": "star", "class_id": 3, "score": 0.7},
            {"label": "circle", "class_id": 0, "score": 0.2},
        ],
    }
    written = convert([rec], "labelstudio", tmp_path / "tasks.json", labels=["circle", "star"])
    tasks = json.loads(written[0].read_text())
    converter = Converter(written[1].read_text(), str(tmp_path), download_resources=False)
    items = list(converter.iter_from_json_file(str(_ls_export(tasks, tmp_path))))
    assert items[0]["output"]["choice"][0]["choices"] == ["star"]
    assert tasks[0]["predictions"][0]["score"] == 0.7  # the handed-off label's, not the mean of the top-k (0.45)


def test_label_studio_refuses_before_writing_either_file(tmp_path):
    """An existing ``<out>.config.xml``: the tasks file was written, then the config refused, leaving half an
    output (and the next run refused on the tasks file)."""
    config = tmp_path / "tasks.config.xml"
    config.write_text("<mine/>")
    with pytest.raises(Exception, match="tasks.config.xml: already exists"):
        convert([_detect_record()], "labelstudio", tmp_path / "tasks.json")
    assert not (tmp_path / "tasks.json").exists() and config.read_text() == "<mine/>"


def test_voc_round_trips_through_torchvision_parser(tmp_path):
    from torchvision.datasets import VOCDetection

    rec = _detect_record()
    failed = {**_detect_record("imgs/bad.png"), "error": "no such file", "predictions": []}
    path, subsets, _ = convert([rec, failed], "voc", tmp_path / "voc")
    assert path == tmp_path / "voc" / "Annotations" / "a.xml"
    assert subsets.read_text() == "a\n"  # the failed record is left out of the subset list too
    parsed = VOCDetection.parse_voc_xml(ET.parse(path).getroot())["annotation"]
    assert parsed["filename"] == "a.png" and parsed["size"] == {"width": str(W), "height": str(H), "depth": "3"}
    for obj, p in zip(parsed["object"], rec["predictions"], strict=True):
        assert obj["name"] == p["label"]
        b = obj["bndbox"]
        back = [int(b["xmin"]) - 1, int(b["ymin"]) - 1, int(b["xmax"]), int(b["ymax"])]
        assert np.allclose(back, p["box"], atol=0.5 + 1e-9)  # within a pixel (half a pixel, by rounding)
    with pytest.raises(Exception, match="already exists"):
        convert([rec], "voc", tmp_path / "voc")


def _datumaro():
    return pytest.importorskip(
        "datumaro",
        reason="datumaro reads CVAT and VOC here; .ci/run installs it: pip install --no-deps datumaro==1.13.12 "
        "orjson json-stream json-stream-rs-tokenizer shapely imagesize",
    )


def _datumaro_read(path: Path, fmt: str, **options) -> list[tuple[str, list[tuple[str, str, list[float]]]]]:
    """``(item id, [(kind, label, coordinates)])`` per image as datumaro imports the dataset at ``path``:
    ``Bbox`` as ``[x1, y1, x2, y2]``, ``Polygon`` as its flat points, ``Label`` (a CVAT tag) as ``[]``."""
    dm = _datumaro()
    dataset = dm.Dataset.import_from(str(path), fmt, **options)
    names = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
    items = []
    for item in dataset:
        shapes = []
        for ann in item.annotations:
            if isinstance(ann, dm.Bbox):
                x, y, w, h = ann.get_bbox()
                shapes.append(("box", names[ann.label], [x, y, x + w, y + h]))
            elif isinstance(ann, dm.Polygon):
                shapes.append(("polygon", names[ann.label], list(ann.points)))
            else:
                assert isinstance(ann, dm.Label), ann
                shapes.append(("tag", names[ann.label], []))
        items.append((item.id, shapes))
    return items


def _cvat_through_datumaro(records: list[dict], tmp: Path) -> list[tuple[str, list[tuple[str, str, list[float]]]]]:
    """cnnkit's CVAT XML in the layout datumaro imports: ``NAME.xml`` with the images under ``images/``
    (datumaro refuses an annotation whose image it cannot find; blank pictures of the record's size do)."""
    from PIL import Image

    (tmp / "cvat").mkdir()
    convert(records, "cvat", tmp / "cvat" / "predictions.xml")
    for r in records:
        picture = tmp / "cvat" / "images" / r["path"]
        picture.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (r["width"], r["height"])).save(picture)
    return _datumaro_read(tmp / "cvat", "cvat")


def test_cvat_boxes_polygons_and_tags_read_by_datumaro(tmp_path):
    _datumaro()
    rec = _detect_record()
    inst, masks = _instance_record()
    cls = {
        "path": "x.png",
        "task": "classify",
        "model": "m",
        "width": 8,
        "height": 8,
        "time_ms": 1.0,
        "error": None,
        "predictions": [{"label": "star", "class_id": 3, "score": 0.7}],
    }
    items = dict(_cvat_through_datumaro([rec, inst, cls], tmp_path))
    assert set(items) == {"imgs/a", "imgs/b", "x"}
    boxes = items["imgs/a"]
    assert [(kind, label) for kind, label, _ in boxes] == [("box", p["label"]) for p in rec["predictions"]]
    for (_, _, box), p in zip(boxes, rec["predictions"], strict=True):
        assert np.allclose(box, p["box"], atol=0.01)  # written with two decimals
    polygons = items["imgs/b"]
    assert [(kind, label) for kind, label, _ in polygons] == [("polygon", "circle"), ("polygon", "square")]
    for (_, _, points), m in zip(polygons, masks, strict=True):
        _within_a_pixel(_raster(points), m)
    assert items["x"] == [("tag", "star", [])]


def test_cvat_segment_polygons_read_by_datumaro(tmp_path):
    """A segment record's saved mask: one polygon per class, background left out."""
    _datumaro()
    rec, masks = _segment_record(tmp_path)
    ((_, shapes),) = _cvat_through_datumaro([rec], tmp_path)
    assert [(kind, label) for kind, label, _ in shapes] == [("polygon", "circle"), ("polygon", "square")]
    for _, label, points in shapes:
        _within_a_pixel(_raster(points), masks[label])


def test_voc_dataset_read_by_datumaro(tmp_path):
    """The folder is a VOC dataset datumaro imports as it is (subset list and label map included), with
    VOC's 1-based corners; boxes come back within half a pixel (rounding)."""
    _datumaro()
    rec = _detect_record()
    inst, _ = _instance_record()
    convert([rec, inst], "voc", tmp_path / "voc")
    items = dict(_datumaro_read(tmp_path / "voc", "voc_detection", coordinate_mode="voc-one-based"))
    assert set(items) == {"a", "b"}
    for r, stem in ((rec, "a"), (inst, "b")):
        shapes = items[stem]
        assert [(kind, label) for kind, label, _ in shapes] == [("box", p["label"]) for p in r["predictions"]]
        for (_, _, box), p in zip(shapes, r["predictions"], strict=True):
            assert np.allclose(box, p["box"], atol=0.5 + 1e-9)


def test_voc_refuses_tasks_it_does_not_fit(tmp_path):
    from cnnkit.errors import OptionError

    cls = {"path": "x.png", "task": "classify", "model": "m", "width": 8, "height": 8, "error": None, "predictions": []}
    with pytest.raises(OptionError, match="voc does not fit classify"):
        convert([cls], "voc", tmp_path / "voc")
    assert not (tmp_path / "voc").exists()  # refused before any folder was made


def test_label_studio_segment_polygons_and_brush_round_trip(tmp_path):
    """A segment record's saved mask: one polygon (or brush) region per class, background left out."""
    pytest.importorskip("label_studio_converter", reason="label-studio-converter is the reader of this format")
    from label_studio_converter import Converter
    from label_studio_converter.brush import decode_rle

    rec, masks = _segment_record(tmp_path)
    written = convert([rec], "labelstudio", tmp_path / "tasks.json")
    tasks = json.loads(written[0].read_text())
    assert "background" not in written[1].read_text()
    converter = Converter(written[1].read_text(), str(tmp_path), download_resources=False)
    converter.convert_to_coco(str(_ls_export(tasks, tmp_path)), str(tmp_path / "coco"), is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_label = {names[a["category_id"]]: _raster(a["segmentation"][0]) for a in coco["annotations"]}
    assert set(by_label) == set(masks)
    for label, m in masks.items():
        _within_a_pixel(by_label[label], m)

    written = convert([rec], "labelstudio", tmp_path / "brush.json", brush=True)
    assert "<BrushLabels" in written[1].read_text()
    result = json.loads(written[0].read_text())[0]["predictions"][0]["result"]
    assert [r["value"]["brushlabels"] for r in result] == [["circle"], ["square"]]
    for r in result:
        decoded = decode_rle(r["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0
        assert np.array_equal(decoded, masks[r["value"]["brushlabels"][0]])  # brush: the very pixels


def test_voc_of_instance_records_round_trips_their_boxes(tmp_path):
    from torchvision.datasets import VOCDetection

    rec, _ = _instance_record()
    path, *_ = convert([rec], "voc", tmp_path / "voc")
    parsed = VOCDetection.parse_voc_xml(ET.parse(path).getroot())["annotation"]
    for obj, p in zip(parsed["object"], rec["predictions"], strict=True):
        b = obj["bndbox"]
        back = [int(b["xmin"]) - 1, int(b["ymin"]) - 1, int(b["xmax"]), int(b["ymax"])]
        assert obj["name"] == p["label"] and np.allclose(back, p["box"], atol=0.5 + 1e-9)


def test_coco_results_of_a_detect_run_load_in_pycocotools(tmp_path):
    """``-f coco`` (detect): pycocotools reads the boxes back as the records have them."""
    from pycocotools.coco import COCO
    from typer.testing import CliRunner

    from cnnkit.cli import app

    sample = str(Path(__file__).resolve().parents[2] / "samples" / "scene_0.png")
    runner = CliRunner()
    coco_run = runner.invoke(app, ["detect", sample, "-f", "coco", "-o", str(tmp_path / "r.json")])
    json_run = runner.invoke(app, ["detect", sample, "-f", "json"])
    assert coco_run.exit_code == 0 and json_run.exit_code == 0, coco_run.output + json_run.output
    (rec,) = json.loads(json_run.stdout)
    results = json.loads((tmp_path / "r.json").read_text())
    gt = COCO()
    gt.dataset = {
        "images": [{"id": r["image_id"], "width": rec["width"], "height": rec["height"]} for r in results[:1]],
        "annotations": [],
        "categories": [{"id": r["category_id"]} for r in results],
    }
    gt.createIndex()
    loaded = gt.loadRes(str(tmp_path / "r.json"))
    got = sorted((a["score"], a["bbox"]) for a in loaded.loadAnns(loaded.getAnnIds()))
    want = sorted(
        (p["score"], [*p["box"][:2], p["box"][2] - p["box"][0], p["box"][3] - p["box"][1]]) for p in rec["predictions"]
    )
    assert len(got) == len(want) > 0
    for (s1, b1), (s2, b2) in zip(got, want, strict=True):
        assert s1 == pytest.approx(s2, abs=1e-4) and np.allclose(b1, b2, atol=1.0)  # within a pixel


def test_yolo_txt_of_a_detect_run_reads_in_ultralytics(tmp_path):
    from typer.testing import CliRunner
    from ultralytics.data.utils import verify_image_label

    from cnnkit.cli import app

    sample = Path(__file__).resolve().parents[2] / "samples" / "scene_0.png"
    run = CliRunner().invoke(
        app, ["detect", str(sample), "--save-dir", str(tmp_path / "run"), "--save-txt", "-f", "json"]
    )
    assert run.exit_code == 0, run.output
    (rec,) = json.loads(run.stdout)
    out = verify_image_label((str(sample), rec["label_file"], "", False, 80, 0, 0, False))
    assert out[0] is not None, out[-1]  # ultralytics marks a file it refuses as corrupt
    labels = out[1]  # class, cx, cy, w, h (normalised), as ultralytics trains on them
    assert len(labels) == len(rec["predictions"]) > 0
    w, h = rec["width"], rec["height"]
    for (cls, cx, cy, bw, bh), p in zip(labels, rec["predictions"]):
        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        assert int(cls) == p["class_id"] and np.allclose(box, p["box"], atol=1.0)  # within a pixel


def test_voc_refuses_two_inputs_of_one_name_before_writing_anything_and_keeps_thin_boxes_whole(tmp_path):
    from cnnkit.errors import CnnkitError

    def record(path: str, box: list[float]) -> dict:
        pred = {"label": "a", "class_id": 0, "score": 0.9, "box": box}
        return {"path": path, "task": "detect", "width": 64, "height": 64, "predictions": [pred], "error": None}

    out = tmp_path / "voc"
    with pytest.raises(CnnkitError, match="same name"):
        convert([record("a/x.png", [1, 1, 5, 5]), record("b/x.png", [1, 1, 5, 5])], "voc", out)
    assert not out.exists()
    convert([record("a/x.png", [64, 10, 64, 20])], "voc", out)
    box = ET.parse(out / "Annotations" / "x.xml").find("object/bndbox")
    values = {k: int(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")}
    assert values["xmin"] <= values["xmax"] and values["ymin"] <= values["ymax"]


def _record(path: str, label: str = "a", score: float = 0.9) -> dict:
    pred = {"label": label, "class_id": 0, "score": score, "box": [1.0, 1.0, 5.0, 5.0]}
    return {"path": path, "task": "detect", "model": "m", "width": 8, "height": 8, "predictions": [pred], "error": None}


def test_hostile_names_still_give_files_that_parse(tmp_path):
    """A file name with control characters or bytes that are not UTF-8 (a lone surrogate in Python) made CVAT
    and VOC XML that no parser reads, and crashed the write."""
    rows = [_record("ctl\x01\x1bx.png"), _record("bad\udcffname.png")]
    ET.parse(convert(rows, "cvat", tmp_path / "a.cvat.xml")[0])
    for xml in convert(rows, "voc", tmp_path / "a.voc")[:2]:
        ET.parse(xml)
    json.loads(convert(rows, "labelstudio", tmp_path / "a.json")[0].read_text(encoding="utf-8"))


def test_voc_refuses_a_label_its_labelmap_cannot_hold_and_label_studio_urls_are_quoted(tmp_path):
    from cnnkit.errors import CnnkitError

    with pytest.raises(CnnkitError, match="labelmap.txt cannot hold it"):
        convert([_record("x.png", label="a:b")], "voc", tmp_path / "v.voc")
    assert not (tmp_path / "v.voc").exists()
    (task,) = label_studio_tasks([_record("imgs/x#1 a%.png")], image_prefix="/data/local-files/?d=")
    assert task["data"]["image"] == "/data/local-files/?d=imgs/x%231%20a%25.png"


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio", "voc"])
def test_video_frame_records_are_left_out_with_a_warning(tmp_path, caplog, fmt):
    """A frame's record names its video, which an image task cannot show: each video said once, images kept."""
    from cnnkit.errors import CnnkitError

    frames = [{**_record("clip.mp4"), "frame": k, "time_s": k / 25} for k in range(3)]
    written = convert([_record("a.png"), *frames], fmt, tmp_path / f"out.{fmt}")
    text = "".join(p.read_text() for p in written)
    assert "a.png" in text or "<name>a</name>" in text or "a\n" in text
    assert "clip" not in text
    assert [r.getMessage() for r in caplog.records if "clip.mp4" in r.getMessage()] == [
        f"clip.mp4: 3 video frame record(s) left out ({fmt} takes image records)"
    ]
    with pytest.raises(CnnkitError, match="every record is a video frame"):
        convert(frames, fmt, tmp_path / f"only.{fmt}")


def test_voc_refuses_a_file_name_with_a_line_break_before_writing_anything(tmp_path):
    """`new\\nline.png` was written to ImageSets/Main/default.txt as two names (datumaro read images `new` and
    `line` with no annotations, and left the real one out)."""
    from cnnkit.errors import CnnkitError

    with pytest.raises(CnnkitError, match="line break"):
        convert([_record("ok.png"), _record("new\nline.png")], "voc", tmp_path / "n.voc")
    assert not (tmp_path / "n.voc").exists()


def test_convert_of_a_file_with_no_records_is_an_error_not_an_empty_hand_off(tmp_path):
    """A CSV or COCO file (cnnkit writes both, and reads neither back as records) gave an empty CVAT file, exit 0;
    and `-q` did not silence the VOC summary line."""
    from typer.testing import CliRunner

    from cnnkit.cli import app

    runner = CliRunner()
    csv = tmp_path / "d.csv"
    csv.write_text("path,task,model\nx.png,detect,m\n")
    result = runner.invoke(app, ["convert", str(csv), "cvat"])
    assert result.exit_code == 1 and "no records in this file" in result.stderr
    assert not (tmp_path / "d.cvat.xml").exists()
    records = tmp_path / "r.jsonl"
    from cnnkit.records import Record

    row = _record("x.png")
    records.write_text(json.dumps(Record("x.png", "detect", "m", 8, 8, row["predictions"], 1.0).to_dict()) + "\n")
    quiet = runner.invoke(app, ["-q", "convert", str(records), "voc"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert (tmp_path / "r.voc" / "Annotations" / "x.xml").is_file()
