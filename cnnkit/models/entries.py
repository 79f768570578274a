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
