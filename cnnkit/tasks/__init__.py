"""The task table: the one list of what cnnkit can do.

Every task is a package ``cnnkit/tasks/<name>/`` (predictor, val, training recipe, model zoo,
export hooks, CLI options) and one :class:`Task` row here. The API, the CLI, export, config,
the model registry and the README builder iterate :data:`TASKS`; nothing else lists tasks.
Adding a task means a new package and one line below (see ``docs/architecture.md``).

Rows name their parts as ``"module:attr"`` strings, imported on first use (as ultralytics'
``task_map`` does with classes), so reading the table imports neither torch nor a task.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

    from cnnkit.eval.report import ReportTable
    from cnnkit.export import ExportResult


def _attr(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Task:
    """One task: its name and where its parts live.

    ``default_model``: the registry name used when no model is given (the bundled one);
    ``free_size``: an exported model takes any height/width that is a multiple of it (segmenters),
    ``None`` fixes the export size to the model's; ``background_is_a_class``: the model predicts
    background as class 0 (segmenters) instead of leaving it out of its labels (R-CNN heads).
    """

    name: str
    summary: str
    default_model: str
    free_size: int | None = None
    background_is_a_class: bool = False

    @property
    def package(self) -> str:
        """The task's package, ``cnnkit.tasks.<name>``, where its parts are imported from."""
        return f"cnnkit.tasks.{self.name}"

    @property
    def predictor(self) -> Any:
        """The :class:`~cnnkit.engine.Predictor` subclass (imports the task)."""
        return _attr(f"{self.package}.predict:PREDICTOR")

    @property
    def trainer(self) -> Callable[..., dict[str, Any]]:
        """``finetune(data, FinetuneOptions) -> dict`` of the task's training recipe."""
        return _attr(f"{self.package}.train:finetune")

    @property
    def validator(self) -> Callable[..., dict[str, Any]]:
        """``validate(data, **options) -> dict`` of the task's ``val.py``: plain, JSON-ready metrics."""
        return _attr(f"{self.package}.val:validate")

    def report_tables(self, metrics: dict[str, Any]) -> list[ReportTable]:
        """The :class:`~cnnkit.eval.report.ReportTable` s a ``val`` report shows for ``metrics``."""
        return _attr(f"{self.package}.val:report_tables")(metrics)

    def cli(self) -> typer.Typer:
        """The task's Typer app (``predict`` and ``val``); imports only Typer and the CLI helpers."""
        return _attr(f"{self.package}.cli:app")

    def exporter(self) -> Callable[..., ExportResult] | None:
        """The task's own exporter (``export(...)``) when the generic ONNX/TorchScript one does not fit."""
        module = f"{self.package}.export"
        if importlib.util.find_spec(module) is None:
            return None
        return _attr(f"{module}:export")

    def load_zoo(self) -> None:
        """Registers the task's models in the registry (imports its ``zoo`` module)."""
        importlib.import_module(f"{self.package}.zoo")


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("classify", "top-k labels per image", "shapes-cnn"),
        Task("detect", "boxes, labels and scores per image", "shapes-yolov8n"),
        Task("segment", "a class per pixel", "shapes-unet", free_size=32, background_is_a_class=True),
        Task("instance", "a box and a mask per object", "shapes-maskrcnn"),
        Task("track", "boxes with ids that follow objects through a video", "shapes-yolov8n"),
    )
}

TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    """The row for ``name``; an unknown task names the known ones."""
    from cnnkit.errors import UsageError

    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
