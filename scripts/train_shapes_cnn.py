"""Retrain the bundled ``shapes-cnn`` classifier from scratch (resumable).

    python scripts/train_shapes_cnn.py --out work-data/shapes-cnn   # ~10 min on 2 CPU cores
    # then copy work-data/shapes-cnn/best.safetensors to cnnkit/weights/shapes-cnn.safetensors

Data: ``cnnkit.data.shapes.classification_sample`` (train seed 0, val seed 1); the
test suite checks the shipped weights on seed 123, which training never sees.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cnnkit.data.shapes import CLASSES, classification_sample
from cnnkit.models.zoo import SHAPES_PREPROCESS, _shapes_cnn
from cnnkit.train.classifier import TrainConfig, fit_in_memory


def make_tensors(n: int, seed: int, size: int = 64) -> TensorDataset:
    images, labels = zip(*(classification_sample(seed, i, size=size) for i in range(n)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(SHAPES_PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_PREPROCESS.std).view(1, 3, 1, 1)
    return TensorDataset((x - mean) / std, torch.tensor(labels))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="work-data/shapes-cnn")
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    train, val = make_tensors(args.n_train, 0), make_tensors(args.n_val, 1)
    meta = {
        "task": "classify", "arch": "shapes_cnn", "name": "shapes-cnn", "labels": list(CLASSES),
        "preprocess": SHAPES_PREPROCESS.to_dict(),
        "data": f"shapes classification_sample: train seed 0 n={args.n_train}, val seed 1 n={args.n_val}, 64 px",
    }
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=0, half_checkpoint=True, label_smoothing=0.05)
    fit_in_memory(_shapes_cnn(), train, val, cfg, args.out, meta, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
