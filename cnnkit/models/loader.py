"""Build a registry model with trained weights: bundled, torchvision, a local file or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, UsageError
from cnnkit.models import hub
from cnnkit.models.checkpoint import load_state_dict, read_meta
from cnnkit.models.preprocess import Preprocess
from cnnkit.models.registry import ModelSpec, get_spec, list_models


@dataclass
class Loaded:
    """A model ready to run, with what it needs to be used correctly."""

    module: Any
    name: str
    labels: list[str]
    preprocess: Preprocess | None
    spec: ModelSpec | None
    meta: dict[str, Any]


def spec_for_family(family: str, task: str | None = None) -> ModelSpec:
    for spec in list_models(task=task):
        if spec.family == family:
            return spec
    raise CnnkitError(f"checkpoint names architecture {family!r}, which this cnnkit does not know")


def _load_into(module: Any, state: dict[str, Any], where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CnnkitError(f"{where}: weights do not fit the architecture ({first[:200]})") from exc


def load_checkpoint(path: str | Path, task: str) -> Loaded:
    """A cnnkit ``.safetensors`` checkpoint: architecture, labels and preprocessing inside."""
    meta = read_meta(path)
    if meta.get("task", task) != task:
        raise UsageError(f"{path}: a {meta.get('task')} checkpoint, not {task}")
    try:
        spec = spec_for_family(meta["arch"], task)
    except CnnkitError as exc:
        raise CnnkitError(f"{path}: {exc}") from None
    labels = list(meta["labels"])
    try:
        module = spec.builder(num_classes=len(labels), **(meta.get("arch_kwargs") or {}))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # arch_kwargs from the file, not from cnnkit
        raise CnnkitError(f"{path}: its metadata's arch_kwargs do not build {meta['arch']} ({exc})") from exc
    _load_into(module, load_state_dict(path), str(path))
    pre = Preprocess.from_dict(meta["preprocess"]) if meta.get("preprocess") else spec.preprocess
    return Loaded(module, meta.get("name") or Path(path).stem, labels, pre, spec, meta)


def torchvision_labels_and_preprocess(spec: ModelSpec) -> tuple[list[str], Preprocess]:
    weights = hub.torchvision_weights(spec.weights)
    return list(weights.meta["categories"]), Preprocess.from_torchvision(weights)


def load_model(name: str | None, weights: str | None, task: str, *, default: str) -> Loaded:
    """Resolve ``--model``/``--weights`` the one way every task uses.

    * ``--weights X.safetensors`` (a cnnkit checkpoint) → everything comes from it.
    * ``--weights X.pth`` with ``--model NAME`` → a plain state dict for that architecture.
    * ``--model NAME`` alone → the registry's weights (bundled, or torchvision's cache/download).
    """
    if weights is not None and Path(weights).suffix == ".safetensors":
        return load_checkpoint(weights, task)
    spec = get_spec(name or default, task)
    if weights is not None:
        state = load_state_dict(weights)
        labels, pre = _labels_for(spec)
        head = _head_size(state)
        if head and head != len(labels):
            labels = [f"class_{i}" for i in range(head)]
        module = spec.builder(num_classes=len(labels))
        _load_into(module, state, weights)
        return Loaded(module, spec.name, labels, pre, spec, {})
    if spec.source == "bundled":
        loaded = load_checkpoint(hub.bundled_path(spec.weights), task)
        loaded.name = spec.name
        return loaded
    if spec.source == "torchvision":
        labels, pre = torchvision_labels_and_preprocess(spec)
        module = spec.builder(num_classes=len(labels))
        _load_into(module, hub.torchvision_state_dict(spec.name, spec.weights), spec.name)
        return Loaded(module, spec.name, labels, pre, spec, {})
    raise CnnkitError(f"{spec.name}: no trained weights are known; pass --weights PATH")


def _labels_for(spec: ModelSpec) -> tuple[list[str], Preprocess | None]:
    if spec.labels is not None:
        return list(spec.labels), spec.preprocess
    if spec.source == "torchvision":
        return torchvision_labels_and_preprocess(spec)
    return [], spec.preprocess


def _head_size(state: dict[str, Any]) -> int | None:
    """Output size of the last 2-D weight in the state dict (the classifier head)."""
    for key in reversed(list(state)):
        v = state[key]
        if key.endswith("weight") and getattr(v, "ndim", 0) == 2:
            return int(v.shape[0])
    return None
