"""Retrain the bundled ``lenet5`` (``lenet5-digits``) from scratch on scikit-learn's digits (resumable).

    PYTHONPATH=. python scripts/train_lenet5_digits.py --out work-data/lenet5-digits   # ~20 s on 1 CPU thread
    # then copy work-data/lenet5-digits/best.safetensors to cnnkit/weights/lenet5-digits.safetensors

Data: ``cnnkit data digits`` (``export_digits``: seed 0, 20 % stratified val split,
32 px). Images go through the same :class:`Preprocess` that ``cnnkit classify``
applies, so the bundled weights see at inference exactly what they saw in training.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from cnnkit.data.export import export_digits
from cnnkit.models.registry import get_spec
from cnnkit.tasks.classify.train import recipe
from cnnkit.tasks.classify.zoo import DIGITS_CLASSES, DIGITS_PREPROCESS
from cnnkit.train.loop import LoopConfig, fit, log_progress, seeded_loader


def load_split(root: Path, split: str) -> TensorDataset:
    """Every ``root/split/<digit>/*.png`` as a normalised tensor, through the model's own preprocessing."""
    xs, ys = [], []
    for label, name in enumerate(DIGITS_CLASSES):
        for path in sorted((root / split / name).glob("*.png")):
            xs.append(DIGITS_PREPROCESS(np.asarray(Image.open(path).convert("RGB"))))
            ys.append(label)
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="work-data/lenet5-digits")
    p.add_argument("--data", default="work-data/digits", help="exported here first when missing")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not (data / "cnnkit-data.json").exists():
        export_digits(data, val_fraction=0.2, seed=0, size=32)
    train, val = load_split(data, "train"), load_split(data, "val")
    meta = {
        "task": "classify",
        "arch": "lenet5",
        "name": "lenet5-digits",
        "labels": list(DIGITS_CLASSES),
        "preprocess": DIGITS_PREPROCESS.to_dict(),
        "data": f"sklearn load_digits via export_digits(seed=0, val_fraction=0.2, size=32): "
        f"train n={len(train)}, val n={len(val)}",
    }
    cfg = LoopConfig(epochs=args.epochs, lr=args.lr, seed=0, half_checkpoint=True)
    fit(
        get_spec("lenet5", "classify").builder(),
        seeded_loader(train, args.batch_size, seed=0),
        recipe(DataLoader(val, batch_size=256), list(DIGITS_CLASSES)),
        cfg,
        args.out,
        meta,
        callbacks=log_progress(),
    )


if __name__ == "__main__":
    main()
