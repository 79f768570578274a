"""The model registry: one name → everything needed to use a model without guessing.

Modelled on torchvision's ``Weights`` + ``register_model`` and timm's ``PretrainedCfg``:
a frozen :class:`ModelSpec` holds the builder, the weights source, labels and
preprocessing. Duplicate names raise (as torchvision does, unlike timm).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import UsageError
from cnnkit.models.preprocess import Preprocess
from cnnkit.tasks import TASK_NAMES, TASKS

SOURCES = ("bundled", "torchvision", "ultralytics", "local", "none")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    ``builder(num_classes)`` returns an ``nn.Module`` with random weights; ``source``
    says where trained weights come from and ``weights`` names them there (a file in
    ``cnnkit/weights``, a torchvision enum like ``ResNet18_Weights.IMAGENET1K_V1``,
    an ultralytics model name).
    """

    name: str
    task: str
    family: str
    builder: Callable[..., Any]
    source: str
    weights: str | None = None
    labels: tuple[str, ...] | None = None
    preprocess: Preprocess | None = None
    year: int | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_name(self) -> str:
        """``weights``, for entries whose source has one (bundled, torchvision, ultralytics)."""
        if self.weights is None:
            raise ValueError(f"{self.name}: the registry names no weights for it")
        return self.weights

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"{self.name}: unknown task {self.task!r}")
        if self.source not in SOURCES:
            raise ValueError(f"{self.name}: unknown weights source {self.source!r}")


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds ``spec`` to the registry (a name registered twice is a bug)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    """Each task's ``zoo`` module registers its entries when imported."""
    for task in TASKS.values():
        task.load_zoo()


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*", task: str | None = None) -> list[ModelSpec]:
    """Entries whose name matches the fnmatch ``pattern``, naturally sorted; an unknown ``task`` is refused."""
    if task is not None:
        from cnnkit.tasks import get_task

        get_task(task)
    _ensure_loaded()
    found = [s for s in _REGISTRY.values() if fnmatch.fnmatch(s.name, pattern) and (task is None or s.task == task)]
    return sorted(found, key=lambda s: _natural_key(s.name))


def suggest(name: str, task: str | None = None) -> str | None:
    """The registered name closest to a mistyped ``name`` (``yolo8n.pt`` → ``yolov8n.pt``), if any is close."""
    import difflib

    names = [s.name for s in list_models(task=task)]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not close:
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    return close[0] if close else None


def find_spec(name: str, task: str | None = None) -> ModelSpec | None:
    """The entry called ``name`` (of ``task`` when given), or ``None``."""
    _ensure_loaded()
    spec = _REGISTRY.get(name)
    return spec if spec is not None and (task is None or spec.task == task) else None


def get_spec(name: str, task: str | None = None) -> ModelSpec:
    """The entry called ``name``; an unknown name says which known one is closest, then lists them."""
    spec = find_spec(name, task)
    other = find_spec(name) if spec is None and task is not None else None
    if other is not None:  # known, for another task: say which, not "unknown" with another task's near name
        raise UsageError(f"{name!r} is a {other.task} model, not {task} (run it with `cnnkit {other.task}`)")
    if spec is None:
        names = ", ".join(s.name for s in list_models(task=task))
        guess = suggest(name, task)
        hint = f"; did you mean {guess}?" if guess else ""
        kind = f"{task} " if task else ""
        raise UsageError(f"unknown {kind}model {name!r}{hint} (known: {names}; `cnnkit models` lists them)")
    return spec


def introduction(spec: ModelSpec, labels: list[str] | tuple[str, ...] | None = None) -> str | None:
    """One line for a bundled default: what it knows and which real model to try on photos."""
    if spec.source != "bundled" or "for_photos" not in spec.meta:
        return None
    known = [label for label in (labels or spec.labels or ()) if label not in ("background", "other")]
    others = ' and "other"' if "other" in (labels or spec.labels or ()) else ""
    return (
        f"{spec.name} knows {len(known)} synthetic shapes ({', '.join(known)}){others}; "
        f"for photos try `model` {spec.meta['for_photos']}"
    )


def count_parameters(model: Any) -> int:
    """The number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
