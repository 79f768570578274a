"""A tracker learns nothing: ``finetune --task track`` trains the detector it runs on."""

from __future__ import annotations

from typing import Any

from cnnkit.train.options import FinetuneOptions


def finetune(data: str | None, options: FinetuneOptions) -> dict[str, Any]:
    """The detect recipe on ``data`` (a YOLO dataset yaml); track with ``--weights`` of its best checkpoint."""
    from cnnkit.tasks.detect.train import finetune as detect_finetune

    return detect_finetune(data, options)
