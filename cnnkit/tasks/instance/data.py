"""Mask R-CNN training data: image tensors, torchvision target dicts, and shapes scenes as samples and COCO.

Shared by the finetune recipe and the retraining script (the image tensor is :func:`cnnkit.models.preprocess.image_tensor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cnnkit.data.shapes import Scene
from cnnkit.models.preprocess import image_tensor

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


def make_target(
    boxes: Sequence[Sequence[float]], class_ids: Sequence[int], masks: Sequence[np.ndarray], hw: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """torchvision's target dict; labels are ``class_id + 1`` (0 is background)."""
    h, w = hw
    return {
        "boxes": torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
        "labels": torch.tensor([c + 1 for c in class_ids], dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8))
        if len(masks)
        else torch.zeros(0, h, w, dtype=torch.uint8),
    }


def scene_sample(sc: Scene) -> Sample:
    """A generated shapes scene as one training pair."""
    objs = sc.objects
    return image_tensor(sc.image), make_target(
        [o.box for o in objs], [o.class_id for o in objs], [o.mask for o in objs], sc.image.shape[:2]
    )


def scenes_to_coco(scenes: Sequence[Scene], labels: Sequence[str]) -> dict[str, Any]:
    """Ground truth of ``scenes`` as a COCO dict; image ``i`` has id ``i + 1`` and file name ``str(i)``."""
    from cnnkit.tasks.instance.post import encode_rle

    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)],
    }
    for i, sc in enumerate(scenes):
        h, w = sc.image.shape[:2]
        gt["images"].append({"id": i + 1, "file_name": str(i), "width": w, "height": h})
        for o in sc.objects:
            x1, y1, x2, y2 = o.box
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": o.class_id + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(o.mask.sum()),
                    "iscrowd": 0,
                    "segmentation": encode_rle(o.mask),
                }
            )
    return gt
