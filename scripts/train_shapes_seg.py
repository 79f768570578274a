"""Retrain the bundled ``shapes-unet`` / ``shapes-deeplabv3plus`` segmenters from scratch (resumable).

    python scripts/train_shapes_seg.py --arch unet --out work-data/shapes-unet
    python scripts/train_shapes_seg.py --arch deeplabv3plus --out work-data/shapes-deeplabv3plus
    # rerun the same command to resume; then copy OUT/best.safetensors to
    # cnnkit/weights/shapes-<arch>.safetensors
    # --init CKPT starts from earlier weights (the bundled ones: a second stage)

Data: ``cnnkit.data.shapes`` semantic masks (background + 5 shapes): train seed 0,
validation seed 1; with ``--photo-fraction F`` (a further stage from ``--init``), that share
of the training and validation scenes is drawn over crops of scikit-image's photos with 0–4
shapes, so photos without shapes come out as background; scenes are 256 px as at inference and reach the model through a
random crop of ``--crop-scale``–100 % of their area resized to the model size, so
shapes keep about the scale they have when ``cnnkit segment`` letterboxes a 256 px
scene. The test suite checks the shipped weights on seed 321, which training never sees.
Uses the loop and recipe of ``cnnkit finetune --task segment`` (``cnnkit.train.loop.fit`` with
``cnnkit.tasks.segment.train.recipe``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import torch
from torch.utils.data import DataLoader

from cnnkit.data.photos import train_pool
from cnnkit.data.shapes import scene
from cnnkit.models.checkpoint import load_state_dict
from cnnkit.models.registry import get_spec
from cnnkit.tasks.segment.train import PairDataset, config, recipe, transforms
from cnnkit.tasks.segment.zoo import SHAPES_SEG_LABELS, build_smp
from cnnkit.train.loop import fit, log_progress, seeded_loader

ARCHS = ("unet", "deeplabv3plus")  # each trains the registry's bundled ``shapes-ARCH``


def shapes_pairs(n: int, seed: int, size: int, photo_fraction: float = 0.0) -> list:
    """``n`` scenes of ``seed`` generated once and kept in memory (a few ms each)."""
    options: dict = {}
    if photo_fraction > 0:
        options = {"photos": train_pool(), "photo_fraction": photo_fraction, "objects": (0, 4)}
    return [(s.image, s.semantic) for s in (scene(seed, i, size=size, **options) for i in range(n))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCHS, default="unet")
    p.add_argument("--out", default=None, help="default work-data/shapes-ARCH")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--train-size", type=int, default=256, help="scene size, as at inference")
    p.add_argument(
        "--imgsz",
        type=int,
        default=None,
        help="model input size, recorded in the checkpoint (default: the registry's for --arch)",
    )
    p.add_argument("--crop-scale", type=float, default=0.6, help="smallest random crop, as a share of the scene")
    p.add_argument("--photo-fraction", type=float, default=0.0, help="share of scenes drawn over real photos")
    p.add_argument("--init", default=None, help="start from these weights (a cnnkit .safetensors of the same arch)")
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--train-seed", type=int, default=0, help="scene seed of the training set (a new one per stage)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--target-miou", type=float, default=0.9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    spec = get_spec(f"shapes-{args.arch}", "segment")
    arch_kwargs, pre = spec.meta["arch_kwargs"], spec.preprocess
    if args.imgsz:
        pre = dataclasses.replace(pre, resize=args.imgsz, crop=args.imgsz)
    imgsz = pre.crop
    train_pairs = shapes_pairs(args.n_train, args.train_seed, args.train_size, args.photo_fraction)
    val_pairs = shapes_pairs(args.n_val, 1, 256, args.photo_fraction)
    train = PairDataset(
        train_pairs.__getitem__,
        len(train_pairs),
        transforms(imgsz, True, pre.mean, pre.std, crop_scale=(args.crop_scale, 1.0)),
    )
    val = PairDataset(val_pairs.__getitem__, len(val_pairs), transforms(imgsz, False, pre.mean, pre.std))
    name = f"shapes-{args.arch}"
    meta = {
        "task": "segment",
        "arch": "smp",
        "arch_kwargs": arch_kwargs,
        "name": name,
        "labels": list(SHAPES_SEG_LABELS),
        "preprocess": pre.to_dict(),
        "data": f"cnnkit.data.shapes semantic masks: train seed {args.train_seed} n={args.n_train} at {args.train_size} px, "
        f"random crops of {args.crop_scale:g}-1 of the area resized to {imgsz}, "
        f"val seed 1 n={args.n_val} at 256 px resized to {imgsz}"
        + (
            f"; {args.photo_fraction:g} of the scenes over scikit-image photo crops with 0-4 shapes"
            if args.photo_fraction
            else ""
        ),
    }
    model = build_smp(len(SHAPES_SEG_LABELS), **arch_kwargs)
    if args.init:
        model.load_state_dict(load_state_dict(args.init))
        meta["init"] = args.init
    cfg = config(args.epochs, args.lr, seed=0, half_checkpoint=True, target=args.target_miou)
    fit(
        model,
        seeded_loader(train, args.batch_size, seed=0, drop_last=True),
        recipe(DataLoader(val, batch_size=25), list(SHAPES_SEG_LABELS)),
        cfg,
        args.out or f"work-data/{name}",
        meta,
        callbacks=log_progress(),
    )


if __name__ == "__main__":
    main()
