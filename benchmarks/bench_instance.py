"""``cnnkit instance`` on a folder vs a plain PyTorch loop over the same torchvision Mask R-CNN.

    python benchmarks/bench_instance.py [--n 24] [--imgsz 256] [--batch-size 4] [--threads 1] [--model shapes-maskrcnn] [--weights CKPT]

Both sides load the same module, read the same PNG files and return per-instance
binary masks at the image's size; cnnkit also RLE-encodes them and builds records.
Runs alternate (baseline, cnnkit, baseline, …) so background load hits both alike;
the best of ``--repeats`` is reported. ratio = cnnkit images/s ÷ baseline images/s.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cnnkit
from cnnkit.data.shapes import scene
from cnnkit.models.loader import resolve


def baseline(model: torch.nn.Module, files: list[Path], batch_size: int, conf: float) -> int:
    """The loop a PyTorch user writes: open, to tensor, forward, threshold masks."""
    found = 0
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            images = [
                torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8).copy())
                .permute(2, 0, 1)
                .float()
                / 255
                for f in files[i : i + batch_size]
            ]
            for out in model(images):
                keep = out["scores"] >= conf
                masks = (out["masks"][keep, 0] >= 0.5).numpy()
                found += len(masks)
    return found


def run_cnnkit(predictor, folder: Path, batch_size: int) -> int:
    return sum(len(r.predictions) for r in predictor.stream(str(folder), batch_size=batch_size, workers=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="shapes-maskrcnn")
    p.add_argument("--weights", default=None, help="a cnnkit checkpoint instead of the model's own weights")
    p.add_argument("--conf", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.n):
            Image.fromarray(scene(4242, i, size=args.imgsz).image).save(folder / f"scene_{i:03d}.png")
        files = sorted(folder.glob("*.png"))
        model = resolve("instance", args.model, args.weights).module.eval()
        predictor = cnnkit.load("instance", model=args.model, weights=args.weights, conf=args.conf, device="cpu")
        baseline(model, files[:2], args.batch_size, args.conf)  # warm-up both
        run_cnnkit(predictor, folder, args.batch_size)
        times: dict[str, list[float]] = {"baseline": [], "cnnkit": []}
        counts = {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            counts["baseline"] = baseline(model, files, args.batch_size, args.conf)
            times["baseline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            counts["cnnkit"] = run_cnnkit(predictor, folder, args.batch_size)
            times["cnnkit"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    ips = {k: args.n / v for k, v in best.items()}
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print(f"model {args.model}, {args.n} images of {args.imgsz} px, batch {args.batch_size}, best of {args.repeats}")
    for k in ("baseline", "cnnkit"):
        print(
            f"{k:9} {best[k]:7.2f} s  {ips[k]:6.2f} img/s  instances found: {counts[k]}  "
            f"(all runs: {', '.join(f'{t:.2f}' for t in times[k])} s)"
        )
    print(f"ratio (cnnkit / baseline throughput): {ips['cnnkit'] / ips['baseline']:.3f}")


if __name__ == "__main__":
    main()
