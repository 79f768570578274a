"""Hand-off formats for labeling tools: Label Studio pre-annotations, CVAT for images 1.1 XML and Pascal VOC XML.

Each converter reads records as written (plain dicts, schema v1 or v2), so ``cnnkit convert`` works
on any JSON Lines output, and writes what the tool imports to review predictions instead of labelling
from scratch:

- **Label Studio** (``labelstudio``): one JSON list of tasks, each ``{"data": {"image": …},
  "predictions": [{"model_version", "score", "result": […]}]}``; results are ``choices`` (classify),
  ``rectanglelabels`` (detect), ``polygonlabels`` (instance, segment; ``brushlabels`` RLE with
  ``brush=True``), with ``original_width``/``original_height`` and coordinates in percent of the
  image, as Label Studio's import docs specify. A matching labeling config is written beside it.
- **CVAT for images 1.1** (``cvat``): one XML file; ``<tag>`` (classify), ``<box>`` (detect),
  ``<polygon>`` (instance, segment), each with the score as an attribute.
- **Pascal VOC** (``voc``): ``Annotations/<stem>.xml`` per image: ``<object>`` with a 1-based
  ``<bndbox>`` (VOC's convention: ``xmin = x1 + 1`` rounded, ``xmax = x2`` rounded) for detect and instance;
  ``ImageSets/Main/default.txt`` (the stems) and ``labelmap.txt`` (the labels) beside them, without which
  datumaro's VOC importer (CVAT's too) finds no dataset or refuses labels outside VOC's 20.

Masks become polygons through OpenCV's contour tracer (outer contours, at least 3 points).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from cnnkit.errors import CnnkitError, OptionError, printable
from cnnkit.io.files import AlreadyExists, atomic_write_text, displayable, explicit_dir
from cnnkit.records import placed

log = logging.getLogger("cnnkit")

if TYPE_CHECKING:
    import numpy as np

HANDOFF_FORMATS = ("labelstudio", "cvat", "voc")
TASKS_OF = {
    "labelstudio": ("classify", "detect", "instance", "segment"),
    "cvat": ("classify", "detect", "instance", "segment"),
    "voc": ("detect", "instance"),
}


# -- masks as polygons ------------------------------------------------------------------------------
def mask_polygons(mask: np.ndarray, min_area: float = 4.0) -> list[list[tuple[float, float]]]:
    """Outer contours of a binary mask as ``[(x, y), …]`` point lists (pixel corners, so a filled polygon
    covers the same pixels); tiny specks under ``min_area`` pixels are dropped."""
    import cv2
    import numpy as np

    m = np.ascontiguousarray(mask.astype(np.uint8))
    if not m.any():
        return []
    # trace on a 2× upsampled mask: contour points then lie on pixel edges, not pixel centres
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if cv2.contourArea(c) / 4 < min_area or len(c) < 3:
            continue
        pts = c.reshape(-1, 2).astype(np.float64)
        pts = (pts + 0.5) / 2  # 2× grid → image coordinates, on pixel boundaries
        polygons.append([(round(float(x), 2), round(float(y), 2)) for x, y in pts])
    return polygons


def _instance_mask(pred: dict[str, Any]) -> np.ndarray:
    from cnnkit.results import decode_rle

    return decode_rle(pred["mask"])


def _segment_mask(record: dict[str, Any]) -> np.ndarray | None:
    from cnnkit.report.thumbs import _saved_mask

    return _saved_mask(record)


def _regions(record: dict[str, Any]) -> list[tuple[dict[str, Any], list[list[tuple[float, float]]]]]:
    """``(prediction, polygons)`` per instance, or per class of a segment record's saved mask."""
    preds = record.get("predictions") or []
    if record.get("task") == "instance":
        return [(p, mask_polygons(_instance_mask(p))) for p in preds]
    if record.get("task") == "segment":
        mask = _segment_mask(record)
        if mask is None:
            return []
        return [(p, mask_polygons(mask == int(p["class_id"]))) for p in preds if int(p["class_id"]) != 0]
    return []


def _ok(records: Iterable[dict[str, Any]], fmt: str) -> Iterable[dict[str, Any]]:
    """Successful records of the tasks ``fmt`` fits (a failed record has nothing to hand off)."""
    for r in records:
        if r.get("error") is not None:
            continue
        if r.get("task") not in TASKS_OF[fmt]:
            raise OptionError(
                "to", f"{fmt} does not fit {r.get('task')} records (it takes {', '.join(TASKS_OF[fmt])})", fmt
            )
        preds = r.get("predictions") or []
        kept = placed(preds, r.get("width"), r.get("height"))
        if len(kept) < len(preds):
            log.warning(
                "%s: %d prediction(s) left out (a box with null or impossible coordinates, or a mask not of the "
                "image's size)",
                r.get("path"),
                len(preds) - len(kept),
            )
        yield {**r, "predictions": kept}


def _images_only(records: Iterable[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """The records of images: a video frame's record names the video, which a labeling tool's image task
    cannot show, so frames are left out with one warning line per video."""
    rows, frames = [], Counter[str]()
    for r in records:
        if r.get("frame") is None:
            rows.append(r)
        else:
            frames[str(r.get("path"))] += 1
    if frames and not rows:
        raise CnnkitError(f"nothing to convert: every record is a video frame ({fmt} takes image records)")
    for path, n in frames.items():
        log.warning("%s: %d video frame record(s) left out (%s takes image records)", path, n, fmt)
    return rows


# -- Label Studio ----------------------------------------------------------------------------------
def label_studio_tasks(
    records: Iterable[dict[str, Any]], *, image_prefix: str = "", brush: bool = False
) -> list[dict[str, Any]]:
    """Label Studio tasks with predictions (see the module doc); ``image_prefix`` is put before each path,
    percent-encoded as a URL's part (e.g. ``/data/local-files/?d=`` for Label Studio's local file storage, which
    unquotes it: a ``#``, ``?``, ``%`` or space in a name would cut or change it)."""
    from urllib.parse import quote

    tasks: list[dict[str, Any]] = []
    for r in _ok(records, "labelstudio"):
        w, h = int(r["width"]), int(r["height"])
        results = []
        for k, item in enumerate(_ls_results(r, w, h, brush)):
            results.append(
                {
                    "id": f"r{len(tasks)}_{k}",
                    "to_name": "image",
                    "original_width": w,
                    "original_height": h,
                    "image_rotation": 0,
                    **item,
                }
            )
        scores = [x["score"] for x in results if x.get("score") is not None]  # of what is handed off: a classify
        # record hands off its top label, and the mean of its top-k was about 1/k whatever the model said
        tasks.append(
            {
                "data": {"image": image_prefix + quote(r["path"]) if image_prefix else r["path"]},
                "predictions": [
                    {
                        "model_version": str(r.get("model", "")),
                        "result": results,
                        "score": round(float(sum(scores) / len(scores)), 6) if scores else None,
                    }
                ],
            }
        )
    return tasks


def _ls_results(r: dict[str, Any], w: int, h: int, brush: bool) -> Iterable[dict[str, Any]]:
    preds = r.get("predictions") or []
    task = r["task"]
    if task == "classify":
        if preds:
            yield {
                "from_name": "choice",
                "type": "choices",
                "value": {"choices": [preds[0]["label"]]},
                "score": preds[0].get("score"),
            }
        return
    if task == "detect":
        for p in preds:
            x1, y1, x2, y2 = (float(v) for v in p["box"])
            yield {
                "from_name": "label",
                "type": "rectanglelabels",
                "score": p.get("score"),
                "value": {
                    "x": 100 * x1 / w,
                    "y": 100 * y1 / h,
                    "width": 100 * (x2 - x1) / w,
                    "height": 100 * (y2 - y1) / h,
                    "rotation": 0,
                    "rectanglelabels": [p["label"]],
                },
            }
        return
    if brush:
        yield from _ls_brush(r)
        return
    for p, polygons in _regions(r):
        for poly in polygons:
            item = {
                "from_name": "label",
                "type": "polygonlabels",
                "value": {
                    "points": [[100 * x / w, 100 * y / h] for x, y in poly],
                    "closed": True,
                    "polygonlabels": [p["label"]],
                },
            }
            if p.get("score") is not None:
                item["score"] = p["score"]
            yield item


def _ls_brush(r: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Brush masks in Label Studio's own RLE (its converter package encodes them)."""
    try:
        from label_studio_converter.brush import mask2rle
    except ImportError:
        raise OptionError(
            "brush", "needs the label-studio-converter package (pip install label-studio-converter)", True
        ) from None
    import numpy as np

    if r["task"] == "instance":
        pairs = [(p, _instance_mask(p)) for p in r.get("predictions") or []]
    else:
        mask = _segment_mask(r)
        pairs = (
            []
            if mask is None
            else [(p, mask == int(p["class_id"])) for p in r["predictions"] if int(p["class_id"]) != 0]
        )
    for p, m in pairs:
        item = {
            "from_name": "label",
            "type": "brushlabels",
            "value": {"format": "rle", "rle": mask2rle((m > 0).astype(np.uint8) * 255), "brushlabels": [p["label"]]},
        }
        if "score" in p:
            item["score"] = p["score"]
        yield item


def label_studio_config(task: str, labels: Sequence[str], *, brush: bool = False) -> str:
    """The labeling config (XML) whose names the pre-annotations use: ``image``, ``label``/``choice``."""
    root = ET.Element("View")
    ET.SubElement(root, "Image", name="image", value="$image", zoom="true")
    if task == "classify":
        parent = ET.SubElement(root, "Choices", name="choice", toName="image", choice="single")
        tag = "Choice"
    else:
        kind = {"detect": "RectangleLabels"}.get(task, "BrushLabels" if brush else "PolygonLabels")
        parent = ET.SubElement(root, kind, name="label", toName="image")
        tag = "Label"
    for label in labels:
        ET.SubElement(parent, tag, value=label)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


# -- CVAT for images 1.1 ---------------------------------------------------------------------------
def cvat_xml(records: Iterable[dict[str, Any]], labels: Sequence[str] = ()) -> str:
    """CVAT for images 1.1: ``<annotations><version>1.1</version><meta>…labels…</meta><image …>…</image>…``."""
    rows = list(_ok(records, "cvat"))
    names = list(labels) or sorted({p["label"] for r in rows for p in r.get("predictions") or []})
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(meta, "name").text = "cnnkit predictions"
    ET.SubElement(meta, "size").text = str(len(rows))
    ET.SubElement(meta, "mode").text = "annotation"
    label_el = ET.SubElement(meta, "labels")
    for name in names:
        lab = ET.SubElement(label_el, "label")
        ET.SubElement(lab, "name").text = name
        ET.SubElement(lab, "type").text = "any"
        ET.SubElement(lab, "attributes")
    for i, r in enumerate(rows):
        image = ET.SubElement(root, "image", id=str(i), name=r["path"], width=str(r["width"]), height=str(r["height"]))
        preds = r.get("predictions") or []
        if r["task"] == "classify":
            if preds:
                _score(ET.SubElement(image, "tag", label=preds[0]["label"], source="auto"), preds[0])
        elif r["task"] == "detect":
            for p in preds:
                x1, y1, x2, y2 = (float(v) for v in p["box"])
                _score(
                    ET.SubElement(
                        image,
                        "box",
                        label=p["label"],
                        source="auto",
                        occluded="0",
                        xtl=f"{x1:.2f}",
                        ytl=f"{y1:.2f}",
                        xbr=f"{x2:.2f}",
                        ybr=f"{y2:.2f}",
                        z_order="0",
                    ),
                    p,
                )
        else:
            for p, polygons in _regions(r):
                for poly in polygons:
                    _score(
                        ET.SubElement(
                            image,
                            "polygon",
                            label=p["label"],
                            source="auto",
                            occluded="0",
                            points=";".join(f"{x:.2f},{y:.2f}" for x, y in poly),
                            z_order="0",
                        ),
                        p,
                    )
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _score(el: ET.Element, pred: dict[str, Any]) -> None:
    if pred.get("score") is not None:  # null: the model's NaN
        ET.SubElement(el, "attribute", name="score").text = f"{float(pred['score']):.6f}"


# -- Pascal VOC ------------------------------------------------------------------------------------
def voc_xml(record: dict[str, Any]) -> str:
    """One image's Pascal VOC annotation: 1-based, inclusive ``bndbox`` pixel indices."""
    root = ET.Element("annotation")
    path = Path(record["path"])
    ET.SubElement(root, "folder").text = path.parent.name
    ET.SubElement(root, "filename").text = path.name
    ET.SubElement(root, "path").text = record["path"]
    ET.SubElement(ET.SubElement(root, "source"), "database").text = f"cnnkit {record.get('model', '')}".strip()
    size = ET.SubElement(root, "size")
    for key, value in (("width", record["width"]), ("height", record["height"]), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for p in record.get("predictions") or []:
        x1, y1, x2, y2 = (float(v) for v in p["box"])
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = p["label"]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        if p.get("score") is not None:
            ET.SubElement(obj, "score").text = f"{float(p['score']):.6f}"
        box = ET.SubElement(obj, "bndbox")
        xmin, ymin = max(1, round(x1) + 1), max(1, round(y1) + 1)
        corners = (("xmin", xmin), ("ymin", ymin), ("xmax", max(xmin, round(x2))), ("ymax", max(ymin, round(y2))))
        for key, value in corners:  # a box thinner than a pixel is still one pixel, never xmin > xmax
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def voc_labelmap(labels: Sequence[str]) -> str:
    """datumaro's ``labelmap.txt`` (``name:color:parts:actions``, colour left to the tool), as CVAT writes it."""
    return "# label:color_rgb:parts:actions\n" + "".join(f"{name}:::\n" for name in labels)


# -- writing ---------------------------------------------------------------------------------------
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls: no XML document may hold them


def _write(path: Path, text: str, *, overwrite: bool) -> Path:
    """A hand-off file that always parses: C0 control characters (from a file name or label) and the undecodable
    bytes of a file name that is not UTF-8 become U+FFFD, which XML, JSON and UTF-8 all take."""
    return atomic_write_text(path, displayable(_NOT_XML.sub("\ufffd", text)), overwrite=overwrite)


def convert(
    records: Iterable[dict[str, Any]],
    fmt: str,
    output: str | os.PathLike,
    *,
    exist_ok: bool = False,
    labels: Sequence[str] = (),
    image_prefix: str = "",
    brush: bool = False,
) -> list[Path]:
    """Write ``records`` as ``fmt`` at ``output`` (a file; a folder for ``voc``); the paths written.

    Nothing is overwritten without ``exist_ok``; files are written atomically.
    """
    if fmt not in HANDOFF_FORMATS:
        raise OptionError("to", f"expected one of {', '.join(HANDOFF_FORMATS)}", fmt)
    out = Path(output)
    rows = _images_only(records, fmt)
    if fmt == "voc":
        fitting = list(_ok(rows, "voc"))  # refused before anything is created
        seen: dict[str, str] = {}
        for r in fitting:
            stem = Path(r["path"]).stem
            if "\n" in stem or "\r" in stem:  # ImageSets/Main/default.txt is one name per line
                raise CnnkitError(f"{printable(r['path'])}: VOC cannot name a file whose name holds a line break")
            if stem in seen:
                raise CnnkitError(
                    f"{r['path']}: another input has the same name ({stem}, {seen[stem]}); VOC names files by stem"
                )
            seen[stem] = r["path"]
        names = list(labels) or sorted({p["label"] for r in fitting for p in r.get("predictions") or []})
        for name in names:  # labelmap.txt is `name:color:parts:actions`, one per line, # a comment
            if ":" in name or "\n" in name or "\r" in name or name.startswith("#"):
                raise CnnkitError(
                    f"label {name!r}: VOC's labelmap.txt cannot hold it (a ':', a line break or a leading '#')"
                )
        subsets = out / "ImageSets" / "Main"
        targets = [out / "Annotations" / f"{stem}.xml" for stem in seen] + [
            subsets / "default.txt",
            out / "labelmap.txt",
        ]
        there = None if exist_ok else next((t for t in targets if os.path.lexists(t)), None)
        if there is not None:  # before any is written: a refusal halfway left the others in the user's folder
            raise AlreadyExists(f"{there}: already exists (pass `exist_ok=True` to overwrite)")
        folder = explicit_dir(out / "Annotations", exist_ok=exist_ok)
        written = []
        for r in fitting:
            stem = Path(r["path"]).stem
            written.append(_write(folder / f"{stem}.xml", voc_xml(r), overwrite=exist_ok))
        subsets.mkdir(parents=True, exist_ok=True)
        stems = "".join(f"{Path(r['path']).stem}\n" for r in fitting)
        written.append(_write(subsets / "default.txt", stems, overwrite=exist_ok))
        written.append(_write(out / "labelmap.txt", voc_labelmap(names), overwrite=exist_ok))
        return written
    if out.is_dir():
        raise CnnkitError(f"{out}: is a folder ({fmt} writes one file)")
    if fmt == "cvat":
        return [_write(out, cvat_xml(rows, labels), overwrite=exist_ok)]
    tasks = label_studio_tasks(rows, image_prefix=image_prefix, brush=brush)
    task = next((r["task"] for r in rows if r.get("task")), "detect")
    names = list(labels) or sorted(
        {
            p["label"]
            for r in rows
            if r.get("error") is None
            for p in r.get("predictions") or []
            if not (task == "segment" and p["class_id"] == 0)
        }
    )
    config = out.with_name(f"{out.stem}.config.xml")
    there = None if exist_ok else next((t for t in (out, config) if os.path.lexists(t)), None)
    if there is not None:  # before either is written: the tasks file was left behind when its config was refused
        raise AlreadyExists(f"{there}: already exists (pass `exist_ok=True` to overwrite)")
    written = [_write(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", overwrite=exist_ok)]
    written.append(_write(config, label_studio_config(task, names, brush=brush), overwrite=exist_ok))
    return written
