"""Detection entries: the bundled shapes YOLO, ultralytics' hub names and torchvision's Faster R-CNNs.

Builders take ``num_classes`` = number of object classes (no background) and return a
model with random weights; nothing here imports torch until a builder runs.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.registry import ModelSpec, register


def yolo_net(cfg: str = "yolov8n.yaml", num_classes: int = 80) -> Any:
    """An ultralytics ``DetectionModel`` from its architecture yaml, random weights.

    Always built on the CPU: its constructor runs a forward pass and ``.item()``, which the
    ``meta`` device (used to count parameters) cannot do.
    """
    import torch

    from cnnkit._ultralytics import ultralytics

    ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    with torch.device("cpu"):
        return DetectionModel(cfg, nc=num_classes, verbose=False)


def faster_rcnn(arch: str, num_classes: int = 90, **kwargs: Any) -> Any:
    """A torchvision Faster R-CNN with random weights (no backbone download either)."""
    import torchvision

    return torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs)


register(ModelSpec(
    name="shapes-yolov8n", task="detect", family="yolo", builder=partial(yolo_net, "yolov8n.yaml"),
    source="bundled", weights="shapes-yolov8n.pt", labels=SHAPES_CLASSES, year=2023,
    description="YOLOv8n trained by cnnkit on synthetic shapes scenes at 256 px (bundled default)",
    meta={"imgsz": 256, "for_photos": "yolov8n.pt (COCO, downloaded once)"},
))

# ultralytics hub names: downloaded by ultralytics when online, cached in cnnkit's cache.
_ULTRALYTICS = [
    ("yolov8n.pt", "yolov8n.yaml", 2023, "YOLOv8 nano, COCO (ultralytics)"),
    ("yolov8s.pt", "yolov8s.yaml", 2023, "YOLOv8 small, COCO (ultralytics)"),
    ("yolo11n.pt", "yolo11n.yaml", 2024, "YOLO11 nano, COCO (ultralytics)"),
    ("yolo11s.pt", "yolo11s.yaml", 2024, "YOLO11 small, COCO (ultralytics)"),
]
for _name, _cfg, _year, _desc in _ULTRALYTICS:
    register(ModelSpec(
        name=_name, task="detect", family="yolo", builder=partial(yolo_net, _cfg), source="ultralytics",
        weights=_name, year=_year, description=_desc, meta={"imgsz": 640},
    ))

# torchvision Faster R-CNN (the two-stage detector the chapter names beside YOLO); labels = COCO.
_FASTER_RCNN = [
    ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", 2021,
     "Faster R-CNN ResNet-50 FPN v2, COCO (torchvision)"),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1", 2019,
     "Faster R-CNN MobileNetV3-Large FPN at 320 px, COCO (torchvision)"),
]
for _name, _enum, _year, _desc in _FASTER_RCNN:
    register(ModelSpec(
        name=_name, task="detect", family=_name, builder=partial(faster_rcnn, _name), source="torchvision",
        weights=_enum, year=_year, description=_desc,
    ))
