"""Mask R-CNN outputs → cnnkit instance predictions (COCO RLE masks), shared by the predictor and training.

Kept apart from the predictor so the training loop can score a model the same way
``cnnkit instance`` does, without loading a predictor.
"""

from __future__ import annotations

from typing import Any

from cnnkit.results import decode_rle, encode_rle

__all__ = ["decode_rle", "encode_rle", "to_predictions"]


def to_predictions(
    output: dict[str, Any],
    labels: list[str],
    *,
    conf: float = 0.5,
    mask_threshold: float = 0.5,
    max_det: int = 100,
) -> list[dict[str, Any]]:
    """One image's torchvision Mask R-CNN output → ``[{label, class_id, score, box, mask}]``.

    Network label ``k`` is ``class_id = k - 1`` (0 is background); masks are the
    soft masks thresholded at ``mask_threshold``, in the input image's pixels.
    """
    scores = output["scores"].float().cpu()
    keep = (scores >= conf).nonzero().flatten()[:max_det]
    boxes = output["boxes"][keep].float().cpu().numpy()
    net_labels = output["labels"][keep].cpu().tolist()
    masks = (output["masks"][keep, 0] >= mask_threshold).cpu().numpy()
    preds = []
    for i, k in enumerate(net_labels):
        cid = int(k) - 1
        preds.append(
            {
                "label": labels[cid] if 0 <= cid < len(labels) else f"class_{cid}",
                "class_id": cid,
                "score": round(float(scores[keep[i]]), 6),
                "box": [round(float(v), 2) for v in boxes[i]],
                "mask": encode_rle(masks[i]),
            }
        )
    return preds
