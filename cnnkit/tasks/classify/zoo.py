"""The built-in registry entries. Importing this module registers them."""

from __future__ import annotations

from typing import Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.entries import register_torchvision
from cnnkit.models.preprocess import Preprocess
from cnnkit.models.registry import ModelSpec, register

SHAPES_PREPROCESS = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
DIGITS_PREPROCESS = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
DIGITS_CLASSES = tuple(str(d) for d in range(10))
# The bundled classifier's sixth class is "not one of the shapes" (photos, textures, noise).
SHAPES_CNN_LABELS = (*SHAPES_CLASSES, "other")


def _shapes_cnn(num_classes: int = len(SHAPES_CNN_LABELS)) -> Any:
    from cnnkit.models.nets import ShapesNet

    return ShapesNet(num_classes=num_classes)


def _lenet5(num_classes: int = len(DIGITS_CLASSES)) -> Any:
    from cnnkit.models.nets import LeNet5

    return LeNet5(num_classes=num_classes)


def _torchvision(arch: str, num_classes: int = 1000, **kwargs: Any) -> Any:
    """A torchvision classifier with random weights and ``num_classes`` outputs."""
    import torchvision

    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


register(
    ModelSpec(
        name="shapes-cnn",
        task="classify",
        family="shapes_cnn",
        builder=_shapes_cnn,
        source="bundled",
        weights="shapes-cnn.safetensors",
        labels=SHAPES_CNN_LABELS,
        preprocess=SHAPES_PREPROCESS,
        year=2026,
        description="8-conv CNN trained by cnnkit on synthetic shapes, with an other class for photos (bundled default)",
        meta={"for_photos": "resnet50 (ImageNet, downloaded once)"},
    )
)

register(
    ModelSpec(
        name="lenet5",
        task="classify",
        family="lenet5",
        builder=_lenet5,
        source="bundled",
        weights="lenet5-digits.safetensors",
        labels=DIGITS_CLASSES,
        preprocess=DIGITS_PREPROCESS,
        year=1998,
        description="LeNet-5 (LeCun et al.), trained by cnnkit on scikit-learn's real 8x8 digits",
        meta={"fixed_size": 32},
    )
)

# name, weights enum, year, description[, builder keyword arguments]
_TORCHVISION_CLASSIFIERS: list[tuple[Any, ...]] = [
    ("alexnet", "AlexNet_Weights.IMAGENET1K_V1", 2012, "AlexNet, ReLU + dropout on GPUs"),
    ("vgg16", "VGG16_Weights.IMAGENET1K_V1", 2014, "VGG-16, uniform 3x3 convolutions"),
    # The ImageNet weights were ported from TensorFlow and expect transform_input; aux heads are
    # kept so the checkpoint loads strictly and fine-tuning can use the auxiliary losses.
    (
        "googlenet",
        "GoogLeNet_Weights.IMAGENET1K_V1",
        2014,
        "GoogLeNet / Inception v1, auxiliary heads",
        {"aux_logits": True, "transform_input": True, "init_weights": True},
    ),
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 2015, "ResNet-18, skip connections"),
    ("resnet34", "ResNet34_Weights.IMAGENET1K_V1", 2015, "ResNet-34"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 2015, "ResNet-50, bottleneck blocks"),
    ("resnet101", "ResNet101_Weights.IMAGENET1K_V2", 2015, "ResNet-101"),
    ("resnet152", "ResNet152_Weights.IMAGENET1K_V2", 2015, "ResNet-152"),
    ("resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V2", 2016, "ResNeXt-50 32x4d, grouped convolutions"),
    ("resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V2", 2016, "ResNeXt-101 32x8d"),
    ("resnext101_64x4d", "ResNeXt101_64X4D_Weights.IMAGENET1K_V1", 2016, "ResNeXt-101 64x4d"),
    ("wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V2", 2016, "Wide ResNet-50-2"),
    ("wide_resnet101_2", "Wide_ResNet101_2_Weights.IMAGENET1K_V2", 2016, "Wide ResNet-101-2"),
    ("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 2019, "MobileNetV3-Small"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 2019, "MobileNetV3-Large"),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", 2019, "EfficientNet-B0, compound scaling"),
    (
        "vit_b_16",
        "ViT_B_16_Weights.IMAGENET1K_V1",
        2020,
        "Vision Transformer B/16, 224 px patches of 16",
        {},
        {"fixed_size": 224},
    ),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 2022, "ConvNeXt-Tiny"),
]

register_torchvision("classify", _torchvision, _TORCHVISION_CLASSIFIERS)
