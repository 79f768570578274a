"""Score a shapes Mask R-CNN on scenes of a seed that training never saw, and on real photos (the card's figures).

    PYTHONPATH=. python scripts/eval_shapes_maskrcnn.py shapes-maskrcnn            # the bundled model
    PYTHONPATH=. python scripts/eval_shapes_maskrcnn.py work-data/x/best.safetensors --n 200

Prints JSON: box and mask AP/AP50/AP75 with pycocotools at conf >= 0.05 (as during training,
:func:`cnnkit.tasks.instance.train.evaluate_model`) on ``--n`` scenes of ``--seed``, and how many
instances ``cnnkit instance`` finds at its default threshold on each held-out real photo
(``cnnkit.data.photos.HELDOUT_PHOTOS``).
"""

from __future__ import annotations

import argparse
import json

import torch

from cnnkit import api
from cnnkit.data.photos import HELDOUT_PHOTOS, load_photo
from cnnkit.data.shapes import CLASSES, scene
from cnnkit.tasks.instance.data import scenes_to_coco
from cnnkit.tasks.instance.train import evaluate_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a registry name or a .safetensors checkpoint")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    is_file = args.model.endswith(".safetensors")
    predictor = api.load(
        "instance",
        model=None if is_file else args.model,
        weights=args.model if is_file else None,
        device="cpu",
        threads=args.threads,
    )
    scenes = [scene(args.seed, i, size=args.imgsz) for i in range(args.n)]
    metrics = evaluate_model(predictor.model, [s.image for s in scenes], scenes_to_coco(scenes, CLASSES), CLASSES)
    photos = [load_photo(name) for name in HELDOUT_PHOTOS]
    found = {name: len(r.predictions) for name, r in zip(HELDOUT_PHOTOS, predictor(photos))}
    print(
        json.dumps(
            {"model": args.model, "seed": args.seed, "scenes": args.n, **metrics, "photo_instances": found}, indent=2
        )
    )


if __name__ == "__main__":
    main()
