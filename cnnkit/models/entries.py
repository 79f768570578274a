"""Registry rows that every task writes the same way: torchvision's pretrained entries, and the R-CNN builder
that detect and instance share.

A task's ``zoo`` module keeps only what differs (its builder and its table); the rule that the name is
the family and the builder's first argument, and the enum the weights, lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from cnnkit.models.registry import ModelSpec, register

if TYPE_CHECKING:
    import torch


def register_torchvision(task: str, builder: Callable[..., Any], rows: Iterable[tuple[Any, ...]]) -> None:
    """Register ``task``'s torchvision entries; each row is ``(name, weights enum, year, description[,
    builder keyword arguments[, meta]])`` and ``builder(name, num_classes=…, **kwargs)`` builds one."""
    for name, enum, year, description, *extra in rows:
        kwargs = extra[0] if extra else {}
        register(
            ModelSpec(
                name=name,
                task=task,
                family=name,
                builder=partial(builder, name, **kwargs),
                source="torchvision",
                weights=enum,
                year=year,
                description=description,
                meta=extra[1] if len(extra) > 1 else {},
            )
        )


def torchvision_rcnn(arch: str, num_classes: int = 90, **kwargs: Any) -> torch.nn.Module:
    """A torchvision Faster or Mask R-CNN with random weights (no backbone download either); ``num_classes``
    counts the foreground classes, the network's label ``k`` being ``class_id = k - 1``."""
    import torchvision

    return torchvision.models.get_model(
        arch, weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs
    )


# The first ResNet-50 FPN weights were trained with BatchNorm's eps at 0 (torchvision's overwrite_eps).
_EPS_ZERO = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn")


def as_pretrained_rcnn(module: torch.nn.Module, arch: str, trainable_layers: int = 3) -> None:
    """Make an R-CNN built empty into the network torchvision builds for its COCO weights, before they load:
    the backbone body's BatchNorm frozen (eps 0 for the first ResNet-50 FPN weights, else 1e-5, as
    FrozenBatchNorm2d has it) and only its last ``trainable_layers`` stages trainable. A plain BatchNorm gave
    other boxes at eps 1e-5 (MobileNet's own is 1e-3), and fine-tuning moved its statistics at batches of 2."""
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = getattr(getattr(module, "backbone", None), "body", None)
    if body is None:
        return
    eps = 0.0 if arch in _EPS_ZERO else 1e-5

    def freeze(parent: torch.nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(parent, name, FrozenBatchNorm2d(child.num_features, eps=eps))
            else:
                freeze(child)

    freeze(body)
    if hasattr(body, "layer4"):  # a ResNet: torchvision's _resnet_fpn_extractor
        trained = ("layer4", "layer3", "layer2", "layer1", "conv1")[:trainable_layers]
        for name, parameter in body.named_parameters():
            if not name.startswith(trained):
                parameter.requires_grad_(False)
    else:  # a MobileNet's feature blocks: torchvision's _mobilenet_extractor
        blocks = list(body.children())
        stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
        for block in blocks[: stages[len(stages) - trainable_layers]]:
            for parameter in block.parameters():
                parameter.requires_grad_(False)
