"""What an evaluation report shows, as plain data: each task's ``val.py`` lays its metrics out as
:class:`ReportTable` s and the CLI draws them (``cnnkit.cli.report``), so no task draws tables itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReportTable:
    """One table of a report: ``columns`` (the first is a name, left-aligned; the rest right-aligned
    figures), ``rows`` of cell text, and ``notes``: lines printed under the table."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: tuple[str, ...] = ()


def figure(value: float | None, digits: int = 4) -> str:
    """A metric as table text: fixed ``digits``, ``-`` for a figure that does not exist."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]] = (), notes: Sequence[str] = ()
) -> ReportTable:
    """A :class:`ReportTable` with every cell made text (floats through :func:`figure`)."""

    def text(v: object) -> str:
        return figure(v) if isinstance(v, float) else str(v)

    return ReportTable(title, tuple(columns), [tuple(text(v) for v in r) for r in rows], tuple(notes))


RUNTIME_KEYS = ("backend", "device", "precision")
_BACKENDS = {"YoloBackend": "ultralytics", "TorchvisionBackend": "torch (torchvision)"}
_EXPORTED = {"OpenVinoModule": "openvino", "OnnxModule": "onnxruntime", "ScriptModule": "torchscript"}


def runtime_facts(predictor: object) -> dict[str, str]:
    """Backend, device and precision of a loaded predictor: every val's metrics carry them, so a score
    always says what produced it (an ONNX Runtime score is not a PyTorch one)."""
    runtime = getattr(predictor, "runtime", None) or getattr(getattr(predictor, "backend", None), "runtime", None)
    driver = getattr(predictor, "backend", None)
    kind = type(driver).__name__
    backend = getattr(getattr(predictor, "loaded", None), "runtime", None) or _BACKENDS.get(kind, kind)
    compiled = (getattr(driver, "runtime_info", None) or {}).get("backend")  # a YOLO compiled by --backend
    if kind == "YoloBackend" and compiled:
        backend = str(compiled)
    elif kind == "YoloBackend" and getattr(driver, "checkpoint", None) is None:  # an exported file: its runtime
        backend = _EXPORTED.get(type(getattr(driver, "net", None)).__name__, "exported YOLO")
    facts = {"backend": str(backend)}
    if runtime is not None:
        facts["device"] = str(getattr(runtime, "device", ""))
        facts["precision"] = "fp16" if getattr(runtime, "half", False) else "fp32"
    stored = (getattr(getattr(predictor, "loaded", None), "meta", None) or {}).get("precision")
    if stored == "int8":  # an INT8 file from `cnnkit export --int8` says so in its metadata
        facts["precision"] = "int8"
    return facts


def run_facts(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's backend, device and precision in a val's metrics. Detect's ``precision`` is the box
    precision (ultralytics' name), so there the number format is ``dtype``."""
    facts = {k: metrics[k] for k in RUNTIME_KEYS if k in metrics}
    if not isinstance(facts.get("precision"), str):
        facts.pop("precision", None)
        if "dtype" in metrics:
            facts["precision"] = metrics["dtype"]
    return facts


def runtime_note(metrics: dict[str, Any]) -> str:
    """The line under a val table that names what ran: ``backend onnxruntime on cpu (fp32)``."""
    backend, device, precision = (run_facts(metrics).get(k) for k in RUNTIME_KEYS)
    return f"backend {backend}" + (f" on {device}" if device else "") + (f" ({precision})" if precision else "")


def confusion_table(confusion: dict[str, Any], title: str = "confusion matrix", most: int = 20) -> ReportTable:
    """A val's ``confusion`` (``labels`` rows true, ``columns`` predicted, ``matrix``) as a table; over ``most``
    columns it would not fit a terminal, so the note points to the JSON and the HTML report instead."""
    columns = confusion.get("columns", confusion["labels"])
    if "iou" in confusion:  # of boxes
        title += f" of boxes at IoU > {confusion['iou']}, score > {confusion['conf']}"
    title += " (rows true, columns predicted)"
    if len(columns) > most:
        return table(title, ("",), [], [f"{len(columns)} columns: see the JSON metrics or the HTML report"])
    return table(
        title,
        ("true \\ pred", *columns),
        [(label, *row) for label, row in zip(confusion["labels"], confusion["matrix"])],
    )
