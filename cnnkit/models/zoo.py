"""The built-in registry entries. Importing this module registers them."""

from __future__ import annotations

from functools import partial
from typing import Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.preprocess import Preprocess
from cnnkit.models.registry import ModelSpec, register

SHAPES_PREPROCESS = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _shapes_cnn(num_classes: int = len(SHAPES_CLASSES)) -> Any:
    from cnnkit.models.nets import ShapesNet

    return ShapesNet(num_classes=num_classes)


def _torchvision(arch: str, num_classes: int = 1000, **kwargs: Any) -> Any:
    """A torchvision classifier with random weights and ``num_classes`` outputs."""
    import torchvision

    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


register(ModelSpec(
    name="shapes-cnn", task="classify", family="shapes_cnn", builder=_shapes_cnn, source="bundled",
    weights="shapes-cnn.safetensors", labels=SHAPES_CLASSES, preprocess=SHAPES_PREPROCESS, year=2026,
    description="8-conv CNN trained by cnnkit on synthetic shapes (bundled default)",
))

# name, weights enum, year, description
_TORCHVISION_CLASSIFIERS = [
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 2015, "ResNet-18, skip connections"),
    ("resnet34", "ResNet34_Weights.IMAGENET1K_V1", 2015, "ResNet-34"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 2015, "ResNet-50, bottleneck blocks"),
    ("resnet101", "ResNet101_Weights.IMAGENET1K_V2", 2015, "ResNet-101"),
    ("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 2019, "MobileNetV3-Small"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 2019, "MobileNetV3-Large"),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", 2019, "EfficientNet-B0, compound scaling"),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 2022, "ConvNeXt-Tiny"),
    ("vgg16", "VGG16_Weights.IMAGENET1K_V1", 2014, "VGG-16, uniform 3x3 convolutions"),
]

for _name, _enum, _year, _desc in _TORCHVISION_CLASSIFIERS:
    register(ModelSpec(
        name=_name, task="classify", family=_name, builder=partial(_torchvision, _name), source="torchvision",
        weights=_enum, year=_year, description=_desc,
    ))
