"""The Python API: one function per task, the same options as the CLI.

    >>> import cnnkit
    >>> records = cnnkit.classify("samples/shapes_0.png", topk=1)   # doctest: +SKIP
    >>> records[0].predictions[0]["label"]                            # doctest: +SKIP
    'star'

The CLI commands are thin wrappers over these functions; a predictor from
:func:`load` keeps its weights loaded across calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cnnkit.records import Record, records_to_frame

__all__ = ["classify", "finetune", "load", "records_to_frame"]

_RUN_KEYS = ("batch_size", "workers", "recursive", "shard_spec", "max_pixels", "save_dir", "skip")


# task → "module:Predictor class"; each class has a ``load(**options)`` classmethod.
PREDICTORS = {
    "classify": "cnnkit.tasks.classify:Classifier",
}


# task → "module:function" of ``finetune(data, **options) -> dict`` (best/last/out/metrics).
TRAINERS: dict[str, str] = {
    "classify": "cnnkit.train.finetune_classify:finetune",
}


def load(task: str, **options: Any) -> Any:
    """A reusable predictor for ``task`` (``classify`` …); options as for the task function."""
    import importlib

    if task not in PREDICTORS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(PREDICTORS)}")
    module, cls = PREDICTORS[task].split(":")
    return getattr(importlib.import_module(module), cls).load(**options)


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if "shard" in options:
        options["shard_spec"] = options.pop("shard")
    run = {k: options.pop(k) for k in _RUN_KEYS if k in options}
    return options, run


def classify(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Top-k labels for each image in ``sources`` (paths, folders, globs, PIL images, arrays, tensors).

    Options: ``model``, ``weights``, ``topk``, ``device``, ``half``, ``threads``,
    ``batch_size``, ``workers``, ``recursive``, ``shard``, ``save_dir``, ``max_pixels``.
    ``stream=True`` returns an iterator, for inputs too many to hold.
    """
    load_opts, run_opts = _split(dict(options))
    records = load("classify", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def finetune(data: str, *, task: str = "classify", **options: Any) -> dict[str, Any]:
    """Train a model for ``task`` on ``data``; returns paths of the best/last checkpoints and metrics.

    Options that are ``None`` (the CLI's "not given") are dropped, so each trainer's own
    defaults apply (timm's ``create_model`` does the same for command-line kwargs).
    """
    import importlib

    if task not in TRAINERS:
        raise ValueError(f"finetune: unknown task {task!r}; known: {', '.join(TRAINERS) or 'none'}")
    module, fn = TRAINERS[task].split(":")
    options = {k: v for k, v in options.items() if v is not None}
    return getattr(importlib.import_module(module), fn)(data, **options)
