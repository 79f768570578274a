"""Instance segmentation has no export: Mask R-CNN's heads (proposals, per-box masks) are data-dependent
control flow that a trace records for one image only, so an exported file would not be checkable against
PyTorch. The task table finds this module and refuses with one line, as the detect exporter refuses a
Faster R-CNN."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.errors import UsageError

if TYPE_CHECKING:
    from cnnkit.export import ExportResult


def export(
    target: str, *, fmt: str, imgsz: int | None, dynamic_batch: bool, out: str | Path | None, overwrite: bool
) -> ExportResult:
    """Refuse: instance models run on PyTorch only (``--backend auto`` keeps them there too)."""
    raise UsageError(
        f"{target}: instance (Mask R-CNN) models do not export to {fmt}; they run on PyTorch "
        "(their heads are data-dependent, which a traced graph cannot follow)"
    )
