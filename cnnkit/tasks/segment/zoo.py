"""Segmentation registry entries: bundled shapes models, smp architectures, torchvision DeepLab/LR-ASPP.

Every segmentation-models-pytorch model has the family ``smp``; a checkpoint stores
``arch_kwargs`` (``arch``, ``encoder`` and decoder sizes), so any encoder smp offers
round-trips through ``--weights``. smp encoders are always built with
``encoder_weights=None``: nothing is downloaded behind the user's back.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any

from cnnkit.data.shapes import CLASSES as SHAPES_CLASSES
from cnnkit.models.entries import register_torchvision
from cnnkit.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from cnnkit.models.registry import ModelSpec, register

if TYPE_CHECKING:
    import torch

    from cnnkit.models.loader import Loaded

SMP_ARCHS = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus"}
TORCHVISION_ARCHS = ("deeplabv3", "lraspp")
ARCHS = (*SMP_ARCHS, *TORCHVISION_ARCHS)
DEFAULT_ENCODER = "mobilenet_v2"
SHAPES_SEG_LABELS = ("background", *SHAPES_CLASSES)
SHAPES_SEG_PREPROCESS = Preprocess(resize=128, crop=128, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
# DeepLabV3+ predicts at a quarter of its input: 192 px keeps the corners of small shapes.
SHAPES_DEEPLAB_PREPROCESS = dataclasses.replace(SHAPES_SEG_PREPROCESS, resize=192, crop=192)
# The bundled models: small decoders keep each file a few MB.
# Their checkpoints were written as "timm-mobilenetv3_small_100", which build_smp maps to this name.
SHAPES_ENCODER = "tu-tf_mobilenetv3_small_100"
SHAPES_UNET = {"arch": "unet", "encoder": SHAPES_ENCODER, "decoder_channels": [64, 48, 32, 16, 16]}
SHAPES_DEEPLAB = {"arch": "deeplabv3plus", "encoder": SHAPES_ENCODER, "decoder_channels": 96}
# smp's deprecated ``timm-`` encoders that are timm models under another name: (old prefix, new prefix).
_LEGACY_ENCODERS = [
    ("timm-mobilenetv3", "tu-tf_mobilenetv3"),
    ("timm-regnet", "tu-regnet"),
    ("timm-res2", "tu-res2"),
    ("timm-resnest", "tu-resnest"),
    ("timm-gernet", "tu-gernet"),
]


def encoder_name(name: str) -> str:
    """The ``tu-`` name of a deprecated smp ``timm-`` encoder; other names unchanged.

    smp 0.6 maps these names itself, with a DeprecationWarning; smp 0.4 built its own
    dilated MobileNetV3 for DeepLabV3+, whose output differs on the same weights. Mapping
    here keeps old checkpoints computing what they were trained to compute on either.
    """
    for old, new in _LEGACY_ENCODERS:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def build_smp(
    num_classes: int = 1, arch: str = "unet", encoder: str = DEFAULT_ENCODER, **kwargs: Any
) -> torch.nn.Module:
    """An smp model with a randomly initialised encoder (``encoder_weights=None``)."""
    import segmentation_models_pytorch as smp

    from cnnkit.errors import UsageError

    if arch not in SMP_ARCHS:
        raise UsageError(f"unknown smp architecture {arch!r}; choose one of {', '.join(SMP_ARCHS)}")
    if "decoder_channels" in kwargs and isinstance(kwargs["decoder_channels"], list):
        kwargs["decoder_channels"] = tuple(kwargs["decoder_channels"])
    try:
        return smp.create_model(
            SMP_ARCHS[arch], encoder_name=encoder_name(encoder), encoder_weights=None, classes=num_classes, **kwargs
        )
    except KeyError as exc:
        raise UsageError(f"unknown encoder {encoder!r} for {arch} ({str(exc)[:200]})") from exc


def build_torchvision(name: str, num_classes: int = 21) -> torch.nn.Module:
    """A torchvision segmentation model with random weights (backbone included)."""
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if name.startswith("deeplabv3"):
        kwargs["aux_loss"] = True  # the VOC checkpoints carry the auxiliary head
    return torchvision.models.get_model(name, **kwargs)


_BUNDLED: list[tuple[str, dict[str, Any], Preprocess, str]] = [
    (
        "shapes-unet",
        SHAPES_UNET,
        SHAPES_SEG_PREPROCESS,
        "U-Net, MobileNetV3-Small encoder, trained by cnnkit on synthetic shapes masks (bundled default)",
    ),
    (
        "shapes-deeplabv3plus",
        SHAPES_DEEPLAB,
        SHAPES_DEEPLAB_PREPROCESS,
        "DeepLabV3+, MobileNetV3-Small encoder, trained by cnnkit on synthetic shapes masks",
    ),
]
for _name, _kwargs, _pre, _desc in _BUNDLED:
    register(
        ModelSpec(
            name=_name,
            task="segment",
            family="smp",
            builder=partial(build_smp, **_kwargs),
            source="bundled",
            weights=f"{_name}.safetensors",
            labels=SHAPES_SEG_LABELS,
            preprocess=_pre,
            year=2026,
            description=_desc,
            meta={"arch_kwargs": _kwargs, "for_photos": "deeplabv3_resnet50 (Pascal VOC classes, downloaded once)"},
        )
    )
for _arch, _year, _desc in [
    ("unet", 2015, "U-Net (smp), any smp encoder; random init unless given weights"),
    ("unetplusplus", 2018, "U-Net++ (smp), nested skip paths; random init unless given weights"),
    ("deeplabv3plus", 2018, "DeepLabV3+ (smp), atrous pyramid + decoder; random init unless given weights"),
]:
    register(
        ModelSpec(
            name=_arch,
            task="segment",
            family="smp",
            builder=partial(build_smp, arch=_arch),
            source="none",
            preprocess=Preprocess(resize=256, crop=256, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            year=_year,
            description=_desc,
            meta={"arch_kwargs": {"arch": _arch, "encoder": DEFAULT_ENCODER}},
        )
    )
_TORCHVISION: list[tuple[Any, ...]] = [
    (
        "deeplabv3_resnet50",
        "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
        2017,
        "DeepLabV3 ResNet-50 (torchvision), 21 VOC categories",
    ),
    (
        "deeplabv3_resnet101",
        "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",
        2017,
        "DeepLabV3 ResNet-101 (torchvision), 21 VOC categories",
    ),
    (
        "deeplabv3_mobilenet_v3_large",
        "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        2019,
        "DeepLabV3 MobileNetV3-Large (torchvision), 21 VOC categories",
    ),
    (
        "lraspp_mobilenet_v3_large",
        "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        2019,
        "LR-ASPP MobileNetV3-Large (torchvision), 21 VOC categories",
    ),
]
register_torchvision("segment", build_torchvision, _TORCHVISION)


def _torchvision_name(arch: str, encoder: str | None) -> str:
    """``--arch deeplabv3 --encoder resnet50`` → ``deeplabv3_resnet50``."""
    default = {"deeplabv3": "resnet50", "lraspp": "mobilenet_v3_large"}[arch]
    return f"{arch}_{encoder or default}"


def _torchvision_loaded(spec: ModelSpec, weights: str | None) -> Any:
    """A torchvision segmenter with its VOC weights (cache or download) or a local state dict; its
    preprocessing resizes to the preset's size without a crop (the whole image is labelled)."""
    from cnnkit.models import hub
    from cnnkit.models.checkpoint import load_state_dict
    from cnnkit.models.loader import Loaded, load_into, torchvision_labels

    labels = torchvision_labels(spec)
    size = int(hub.torchvision_weights(spec.weights_name).transforms().resize_size[0])
    pre = Preprocess(resize=size, crop=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    state = load_state_dict(weights) if weights else hub.torchvision_state_dict(spec.name, spec.weights_name)
    module = spec.builder(num_classes=len(labels))
    if spec.name.startswith("deeplabv3") and not any(k.startswith("aux_classifier") for k in state):
        module.aux_classifier = None
    load_into(module, state, weights or spec.name, arch=spec.name if weights else None)
    return Loaded(module, spec.name, labels, pre, spec, {})


def _smp_loaded(spec: ModelSpec, weights: str | None, arch_kwargs: dict[str, Any]) -> Any:
    """An smp model: a plain state dict from ``weights``, or random init (with a warning)."""
    import logging

    from cnnkit.models.checkpoint import load_state_dict
    from cnnkit.models.loader import Loaded, head_classes, load_into

    state = load_state_dict(weights) if weights else None
    labels = list(spec.labels or SHAPES_SEG_LABELS)
    head = head_classes(state) if state is not None else None
    if head is not None and head != len(labels):
        labels = [f"class_{i}" for i in range(head)]
    module = build_smp(len(labels), **arch_kwargs)
    name = spec.name if spec.source != "none" else f"{arch_kwargs['arch']}-{arch_kwargs['encoder']}"
    if state is None:
        logging.getLogger("cnnkit").warning(
            "%s: random weights (no weights given); predictions are meaningless", spec.name
        )
    else:
        load_into(module, state, str(weights), arch=name)
    return Loaded(module, name, labels, spec.preprocess, spec, {"arch_kwargs": arch_kwargs})


def resolve(
    model: str | None, weights: str | None, *, default: str, arch: str | None = None, encoder: str | None = None
) -> Loaded | None:
    """The segment task's rules for :func:`cnnkit.models.loader.resolve`: ``arch`` names an smp or
    torchvision architecture (``encoder`` its backbone); torchvision entries get their own preprocessing;
    smp entries take a plain state dict or start random. ``None``: a bundled entry, resolved generically."""
    from cnnkit.errors import OptionError
    from cnnkit.models.registry import get_spec

    if arch is not None:
        if arch not in ARCHS:
            raise OptionError("arch", f"choose one of {', '.join(ARCHS)}", arch)
        if model is not None:
            raise OptionError(("model", "arch"), "give one, not both")
        if arch in TORCHVISION_ARCHS:
            model = _torchvision_name(arch, encoder)
        else:
            return _smp_loaded(
                get_spec(arch, "segment"), weights, {"arch": arch, "encoder": encoder or DEFAULT_ENCODER}
            )
    elif encoder is not None:
        raise OptionError("encoder", "names the backbone of an arch; give the arch too")
    spec = get_spec(model or default, "segment")
    if spec.source == "torchvision":
        return _torchvision_loaded(spec, weights)
    if spec.source == "none" or weights is not None:
        return _smp_loaded(spec, weights, dict(spec.meta.get("arch_kwargs", {})))
    return None
