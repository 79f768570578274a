"""Retrain the bundled ``shapes-cnn`` classifier from scratch (resumable).

    python scripts/train_shapes_cnn.py --out work-data/shapes-cnn   # ~10 min on 2 CPU cores
    # then copy work-data/shapes-cnn/best.safetensors to cnnkit/weights/shapes-cnn.safetensors

Data: ``cnnkit.data.shapes.classification_sample`` (train seed 0, val seed 1) for the five
shapes, and ``cnnkit.data.photos.other_sample`` for the sixth class, ``other`` (crops of
scikit-image's photos, noise and shape-free backgrounds), so a photo is not called a shape.
The test suite checks the shipped weights on seed 123 and on held-out photos, which
training never sees.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from cnnkit.data.photos import other_sample
from cnnkit.data.shapes import classification_sample
from cnnkit.models.checkpoint import load_state_dict
from cnnkit.models.registry import get_spec
from cnnkit.tasks.classify.train import recipe
from cnnkit.tasks.classify.zoo import SHAPES_CNN_LABELS, SHAPES_PREPROCESS
from cnnkit.train.loop import LoopConfig, fit, log_progress, seeded_loader


def _at_scale(seed: int, i: int, size: int, sizes: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """A shape drawn at one of ``sizes`` and resized to ``size`` as inference does (larger inputs are smoother)."""
    drawn = sizes[(i * 7919 + seed) % len(sizes)]
    img, label = classification_sample(seed, i, size=drawn)
    if drawn != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img, label


def make_tensors(n: int, n_other: int, seed: int, size: int = 64, sizes: tuple[int, ...] = (64,)) -> TensorDataset:
    samples = [_at_scale(seed, i, size, sizes) for i in range(n)]
    other = SHAPES_CNN_LABELS.index("other")
    samples += [(other_sample(seed, i, size=size), other) for i in range(n_other)]
    images, labels = zip(*samples)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(SHAPES_PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_PREPROCESS.std).view(1, 3, 1, 1)
    return TensorDataset((x - mean) / std, torch.tensor(labels))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="work-data/shapes-cnn")
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--n-other", type=int, default=4000, help="training images of the other class")
    p.add_argument("--n-other-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="64,96,128,192", help="shapes are drawn at these sizes, then resized to 64")
    p.add_argument("--init", default=None, help="start from these weights (a shapes-cnn .safetensors)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    sizes = tuple(int(v) for v in args.sizes.split(","))
    train = make_tensors(args.n_train, args.n_other, 0, sizes=sizes)
    val = make_tensors(args.n_val, args.n_other_val, 1, sizes=sizes)
    meta = {
        "task": "classify",
        "arch": "shapes_cnn",
        "name": "shapes-cnn",
        "labels": list(SHAPES_CNN_LABELS),
        "preprocess": SHAPES_PREPROCESS.to_dict(),
        "data": (
            f"shapes classification_sample: train seed 0 n={args.n_train}, val seed 1 n={args.n_val}; other_sample "
            f"(scikit-image photo crops, textures): train n={args.n_other}, val n={args.n_other_val}; shapes drawn "
            f"at {args.sizes} px and resized to 64"
        ),
    }
    cfg = LoopConfig(epochs=args.epochs, lr=args.lr, seed=0, half_checkpoint=True)
    model = get_spec("shapes-cnn", "classify").builder()
    if args.init:
        model.load_state_dict(load_state_dict(args.init))
        meta["init"] = args.init
    fit(
        model,
        seeded_loader(train, args.batch_size, seed=0),
        recipe(DataLoader(val, batch_size=256), list(SHAPES_CNN_LABELS), label_smoothing=0.02),
        cfg,
        args.out,
        meta,
        callbacks=log_progress(),
    )


if __name__ == "__main__":
    main()
