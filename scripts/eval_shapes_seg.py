"""Score a shapes segmenter on scenes of a seed that training never saw (the model cards' figures).

    PYTHONPATH=. python scripts/eval_shapes_seg.py shapes-unet            # a bundled model
    PYTHONPATH=. python scripts/eval_shapes_seg.py work-data/x/best.safetensors --n 200

Prints JSON: mIoU, pixel accuracy and per-class IoU, computed with the same predictor
(letterbox, resize back to 256 px) and confusion matrix that ``cnnkit segment val`` uses, and the
share of background pixels on each held-out real photo (``cnnkit.data.photos.HELDOUT_PHOTOS``).
"""

from __future__ import annotations

import argparse
import json

import torch

from cnnkit import api
from cnnkit.data.photos import HELDOUT_PHOTOS, load_photo
from cnnkit.data.shapes import scene
from cnnkit.tasks.segment.val import ConfusionMatrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a registry name or a .safetensors checkpoint")
    p.add_argument("--seed", type=int, default=321)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    is_file = args.model.endswith(".safetensors")
    seg = api.load(
        "segment",
        model=None if is_file else args.model,
        weights=args.model if is_file else None,
        device="cpu",
        threads=args.threads,
    )
    scenes = [scene(args.seed, i, size=256) for i in range(args.n)]
    cm = ConfusionMatrix(len(seg.labels))
    for (record, mask), sc in zip(seg.masks([s.image for s in scenes], batch_size=10), scenes):
        if not record.ok:
            raise SystemExit(f"scene failed: {record.error}")
        cm.update(mask, sc.semantic)
    scores = cm.scores(seg.labels)
    photos = [load_photo(name) for name in HELDOUT_PHOTOS]
    background = {
        name: round(float((mask == 0).mean()), 4) for name, (_, mask) in zip(HELDOUT_PHOTOS, seg.masks(photos))
    }
    print(
        json.dumps(
            {"model": args.model, "seed": args.seed, "scenes": args.n, **scores, "photo_background": background},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
