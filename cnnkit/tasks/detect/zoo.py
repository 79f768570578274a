"""Detection entries: the bundled shapes YOLO, ultralytics' hub names and torchvision's Faster R-CNNs.

Builders take ``num_classes`` = number of object classes (no background) and return a
model with random weights; nothing here imports torch until a builder runs.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.entries import register_torchvision, torchvision_rcnn
from cnnkit.models.registry import ModelSpec, register

if TYPE_CHECKING:
    import torch

    from cnnkit.models.loader import Loaded


def yolo_net(cfg: str = "yolov8n.yaml", num_classes: int = 80) -> torch.nn.Module:
    """An ultralytics ``DetectionModel`` from its architecture yaml, random weights.

    Always built on the CPU: its constructor runs a forward pass and ``.item()``, which the
    ``meta`` device (used to count parameters) cannot do.
    """
    import torch

    from cnnkit.ultralytics_adapter import ultralytics

    ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    with torch.device("cpu"):
        return DetectionModel(cfg, nc=num_classes, verbose=False)


register(
    ModelSpec(
        name="shapes-yolov8n",
        task="detect",
        family="yolo",
        builder=partial(yolo_net, "yolov8n.yaml"),
        source="bundled",
        weights="shapes-yolov8n.pt",
        labels=SHAPES_CLASSES,
        year=2023,
        description="YOLOv8n trained by cnnkit on synthetic shapes scenes at 256 px (bundled default)",
        meta={
            "imgsz": 256,
            "for_photos": "yolov8n.pt (COCO, downloaded once)",
            "track": {"tracker": "shapes-bytetrack", "iou": 0.5},
        },  # cnnkit track's defaults for it (benchmarks/README.md, "Tracking")
    )
)

# ultralytics hub names: downloaded by ultralytics when online, cached in cnnkit's cache.
_ULTRALYTICS = [
    ("yolov8n.pt", "yolov8n.yaml", 2023, "YOLOv8 nano, COCO (ultralytics)"),
    ("yolov8s.pt", "yolov8s.yaml", 2023, "YOLOv8 small, COCO (ultralytics)"),
    ("yolo11n.pt", "yolo11n.yaml", 2024, "YOLO11 nano, COCO (ultralytics)"),
    ("yolo11s.pt", "yolo11s.yaml", 2024, "YOLO11 small, COCO (ultralytics)"),
]
for _name, _cfg, _year, _desc in _ULTRALYTICS:
    register(
        ModelSpec(
            name=_name,
            task="detect",
            family="yolo",
            builder=partial(yolo_net, _cfg),
            source="ultralytics",
            weights=_name,
            year=_year,
            description=_desc,
            meta={"imgsz": 640},
        )
    )

# torchvision Faster R-CNN (the two-stage detector the chapter names beside YOLO); labels = COCO.
_FASTER_RCNN = [
    (
        "fasterrcnn_resnet50_fpn_v2",
        "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
        2021,
        "Faster R-CNN ResNet-50 FPN v2, COCO (torchvision)",
    ),
    (
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
        2019,
        "Faster R-CNN MobileNetV3-Large FPN at 320 px, COCO (torchvision)",
    ),
]
register_torchvision("detect", torchvision_rcnn, _FASTER_RCNN)


def ultralytics_model(where: str | Path) -> Any:
    """An ``ultralytics.YOLO`` (file scanned first, see :func:`cnnkit.ultralytics_adapter.yolo`); a file ultralytics
    cannot load is a one-line error naming it."""
    from cnnkit import ultralytics_adapter
    from cnnkit.errors import CnnkitError, reason_of

    try:
        return ultralytics_adapter.detection_only(ultralytics_adapter.yolo(where), where)
    except CnnkitError:
        raise
    except Exception as exc:  # a broken or foreign file: say which and why
        reason = reason_of(exc, 160)
        raise CnnkitError(f"{where}: not a loadable ultralytics model ({reason})") from exc


def is_ultralytics_asset(name: str) -> bool:
    """True for a weights name ultralytics publishes (``yolov5nu.pt``); a typo is not sent to a download."""
    from cnnkit.ultralytics_adapter import ultralytics

    ultralytics()
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def _ultralytics_loaded(where: str | Path, name: str, spec: ModelSpec | None = None) -> Loaded:
    from cnnkit.models.loader import Loaded
    from cnnkit.ultralytics_adapter import labels_of

    yolo = ultralytics_model(where)
    labels = labels_of(yolo)
    meta: dict[str, Any] = {"where": str(where)}
    if spec is not None and spec.source == "bundled":
        meta["imgsz"] = spec.meta.get("imgsz")
    return Loaded(yolo, name, labels, None, spec, meta, runtime="ultralytics")


def resolve(model: str | None, weights: str | None, *, default: str) -> Loaded | None:
    """Ultralytics models: a local ``.pt`` (as the model, or as the weights of a YOLO entry or of no
    model), a registry YOLO name, or another name ultralytics publishes. ``None`` for the rest
    (Faster R-CNN entries and their state dicts), which the generic rules resolve."""
    from cnnkit.errors import CnnkitError, UsageError
    from cnnkit.models import hub
    from cnnkit.models.loader import sniff
    from cnnkit.models.registry import get_spec

    name = model or default
    pickled = sniff(name) == "pickle"
    if weights is not None and Path(weights).is_file() and (model is None or get_spec(name, "detect").family == "yolo"):
        return _ultralytics_loaded(weights, Path(weights).stem)
    if pickled and Path(name).is_file():
        return _ultralytics_loaded(name, Path(name).stem)
    try:
        spec = get_spec(name, "detect")
    except UsageError:
        a_path = "/" in name or os.sep in name  # `./x.pt` too, which pathlib reads as one part
        if pickled and not a_path and is_ultralytics_asset(name):
            return _ultralytics_loaded(name, Path(name).stem)
        if pickled and a_path:
            raise CnnkitError(f"{name}: no such file") from None
        raise
    if spec.family != "yolo":
        return None
    if weights is not None:
        raise CnnkitError(f"{weights}: no such file")
    where: str | Path = hub.bundled_path(spec.weights_name) if spec.source == "bundled" else spec.weights_name
    if spec.source == "bundled" and not Path(where).is_file():
        raise CnnkitError(f"{spec.name}: bundled weights {where} are missing from this install")
    return _ultralytics_loaded(where, spec.name, spec)
