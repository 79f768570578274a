"""Retrain the bundled ``shapes-maskrcnn`` from scratch (resumable: rerun the same command).

    nohup python scripts/train_shapes_maskrcnn.py --out work-data/shapes-maskrcnn > work-data/maskrcnn.log 2>&1 &
    # then: python scripts/train_shapes_maskrcnn.py --out work-data/shapes-maskrcnn --export
    #       (writes cnnkit/weights/shapes-maskrcnn.safetensors from best.safetensors, fp16)

Data: ``cnnkit.data.shapes.scene(seed=0, index)`` generated on the fly at ``--imgsz``
(step ``s`` uses indices ``s*batch … s*batch+batch-1``, so resuming replays nothing); an
"epoch" of the shared loop is ``--eval-every`` steps, after which it scores mask AP on seed 1; the test suite scores the shipped weights on seed 777. With
``--photo-fraction F`` (a further stage from ``--init``, e.g. the bundled weights) that share of
the training and validation scenes is drawn over crops of scikit-image's photos with 0–4 shapes,
so photos without shapes get no detections.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch

from cnnkit.data.photos import train_pool
from cnnkit.data.shapes import CLASSES, scene
from cnnkit.models.checkpoint import load_state_dict, read_meta, save_checkpoint
from cnnkit.models.hub import bundled_path
from cnnkit.tasks.instance.data import scene_sample, scenes_to_coco
from cnnkit.tasks.instance.train import config, recipe
from cnnkit.tasks.instance.zoo import light_maskrcnn
from cnnkit.train.loop import StepBatches, fit, log_progress

TRAIN_SEED, VAL_SEED = 0, 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work-data/shapes-maskrcnn")
    p.add_argument("--steps", type=int, default=1500, help="rounded up to a multiple of --eval-every")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-val", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--train-seed", type=int, default=TRAIN_SEED, help="scene seed of the training steps (a new one per stage)"
    )
    p.add_argument("--init", default=None, help="start from these weights (a cnnkit .safetensors of the same arch)")
    p.add_argument("--photo-fraction", type=float, default=0.0, help="share of scenes drawn over real photos")
    p.add_argument("--export", action="store_true", help="copy best.safetensors (fp16) into cnnkit/weights")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.export:
        export(out / "best.safetensors")
        return
    arch_kwargs = {"backbone": "resnet18", "fpn_channels": 64, "min_size": args.imgsz, "max_size": max(320, args.imgsz)}
    model = light_maskrcnn(len(CLASSES), **arch_kwargs)
    if args.init:
        model.load_state_dict(load_state_dict(args.init))
    options: dict = {}
    if args.photo_fraction > 0:
        options = {"photos": train_pool(), "photo_fraction": args.photo_fraction, "objects": (0, 4)}
    val = [scene(VAL_SEED, i, size=args.imgsz, **options) for i in range(args.n_val)]
    gt = scenes_to_coco(val, CLASSES)
    meta = {
        "task": "instance",
        "arch": "maskrcnn_light",
        "arch_kwargs": arch_kwargs,
        "name": "shapes-maskrcnn",
        "labels": list(CLASSES),
        "data": f"shapes scenes seed {args.train_seed} at {args.imgsz} px, {args.steps}x{args.batch_size} images; "
        f"val seed {VAL_SEED} n={args.n_val}"
        + (
            f"; {args.photo_fraction:g} of the scenes over scikit-image photo crops with 0-4 shapes, from {args.init}"
            if args.photo_fraction
            else ""
        ),
    }
    epochs = math.ceil(args.steps / args.eval_every)
    cfg = config(epochs, args.eval_every, args.lr, seed=0, checkpoint_every=100)
    cfg.warmup = 100 / args.eval_every  # 100 warm-up steps, as before the loops were one

    def batch_at(step: int) -> list:
        return [
            scene_sample(scene(args.train_seed, step * args.batch_size + j, size=args.imgsz, **options))
            for j in range(args.batch_size)
        ]

    fit(
        model,
        StepBatches(batch_at, args.eval_every),
        recipe([s.image for s in val], gt, CLASSES),
        cfg,
        out,
        meta,
        callbacks=log_progress(every=20),
    )


def export(best: Path) -> None:
    """Store the best checkpoint in fp16 as the bundled weights (metadata kept)."""
    meta = read_meta(best)
    target = bundled_path("shapes-maskrcnn.safetensors")
    save_checkpoint(
        target,
        load_state_dict(best),
        {k: v for k, v in meta.items() if k not in ("format_version", "cnnkit_version")},
        half=True,
    )
    target.with_suffix(".json").unlink(missing_ok=True)  # the header carries the same metadata
    logging.info("wrote %s (%.1f MB)", target, target.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
