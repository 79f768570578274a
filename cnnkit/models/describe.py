"""Facts about registry models for ``cnnkit models`` and ``cnnkit info``.

Parameter counts come from building the model on the ``meta`` device (no memory,
no download), so they are the builder's real numbers, not a table.
"""

from __future__ import annotations

import os
from typing import Any

from cnnkit.models import hub
from cnnkit.models.registry import ModelSpec, count_parameters


def weights_file(spec: ModelSpec) -> str | None:
    """Where an entry's weights are (or would be once downloaded); ``None`` when not known."""
    if spec.source == "bundled":
        return str(hub.bundled_path(spec.weights_name))
    if spec.source == "torchvision":
        return str(hub.torchvision_cache_file(hub.torchvision_weights(spec.weights_name)))
    if spec.source == "ultralytics":
        from cnnkit.ultralytics_adapter import cached_weights

        found = cached_weights(spec.weights_name)
        return str(found) if found else None
    return None


def is_available(spec: ModelSpec) -> bool:
    """Whether an entry's weights are on this machine, so it runs offline: a file that is not empty (one left
    empty by a download that never came is not ready; a file's content is checked when it is loaded)."""
    path = weights_file(spec)
    return bool(path and os.path.isfile(path) and os.path.getsize(path) > 0)


def parameters(spec: ModelSpec) -> int:
    """An entry's parameter count, built on the meta device (no memory, no weights)."""
    from cnnkit.models.loader import _as_torchvision_builds
    from cnnkit.models.meta_device import build_on_meta

    model = build_on_meta(lambda: spec.builder() if spec.labels is None else spec.builder(num_classes=len(spec.labels)))
    _as_torchvision_builds(spec, model)  # the network that runs (an R-CNN's frozen BatchNorm holds no parameters)
    return count_parameters(model)


def describe(spec: ModelSpec) -> dict[str, Any]:
    """An entry as a JSON-ready dict for ``cnnkit models``."""
    info: dict[str, Any] = {
        "name": spec.name,
        "task": spec.task,
        "family": spec.family,
        "year": spec.year,
        "description": spec.description,
        "source": spec.source,
        "weights": spec.weights,
        "parameters": parameters(spec),
        "available": is_available(spec),
        "weights_file": weights_file(spec),
    }
    per_weight = 2 if spec.source == "ultralytics" else 4  # ultralytics publishes fp16 checkpoints (6.2 MB yolov8n)
    info["size_mb"] = round(info["parameters"] * per_weight / 1e6, 2)
    info["imagenet_top1"] = None  # every row has the same keys (known for torchvision's classifiers)
    if spec.source == "bundled" and info["available"]:
        info["size_mb"] = round(os.path.getsize(info["weights_file"]) / 1e6, 2)
    if spec.source == "torchvision":
        meta = hub.torchvision_weights(spec.weights_name).meta
        metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
        info["imagenet_top1"] = metrics.get("acc@1")
        info["size_mb"] = meta.get("_file_size", info["size_mb"])
    return info
