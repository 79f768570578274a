"""Which decoder for large JPEGs? Time per image to get a model-sized RGB array.

Each method ends with an RGB uint8 array whose shorter side is ``--target`` px, from
phone-sized 4000×3000 JPEGs, so the comparison includes the resize each one needs.

    python benchmarks/bench_decode.py [--n 12] [--target 224]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image


def make_photos(folder: Path, n: int) -> list[Path]:
    import skimage.data as data

    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(data.astronaut()).resize((4000, 3000), Image.BICUBIC)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"phone_{i}.jpg"
        if not p.exists():
            arr = np.asarray(base, dtype=np.int16) + rng.integers(-12, 12, (3000, 4000, 3), dtype=np.int16)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, quality=92)
        paths.append(p)
    return paths


def _fit(w: int, h: int, target: int) -> tuple[int, int]:
    s = target / min(w, h)
    return round(w * s), round(h * s)


def pil_full(p: Path, t: int) -> np.ndarray:
    with Image.open(p) as img:
        img = img.convert("RGB")
        return np.asarray(img.resize(_fit(*img.size, t), Image.BILINEAR))


def pil_draft(p: Path, t: int) -> np.ndarray:
    with Image.open(p) as img:
        img.draft("RGB", (t, t))
        img = img.convert("RGB")
        return np.asarray(img.resize(_fit(*img.size, t), Image.BILINEAR))


def cnnkit_decode(p: Path, t: int) -> np.ndarray:
    from cnnkit.io.decode import decode

    rgb = decode(str(p), min_side=t).rgb
    img = Image.fromarray(rgb)
    return np.asarray(img.resize(_fit(*img.size, t), Image.BILINEAR))


def cv2_full(p: Path, t: int) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    return cv2.cvtColor(cv2.resize(bgr, _fit(w, h, t), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def cv2_reduced(p: Path, t: int) -> np.ndarray:
    import cv2

    with Image.open(p) as img:
        w, h = img.size
    factor = 8
    while factor > 1 and min(w, h) // factor < t:
        factor //= 2
    flag = {
        8: cv2.IMREAD_REDUCED_COLOR_8,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        1: cv2.IMREAD_COLOR,
    }[factor]
    bgr = cv2.imread(str(p), flag)
    h2, w2 = bgr.shape[:2]
    return cv2.cvtColor(cv2.resize(bgr, _fit(w2, h2, t), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def torchvision_io(p: Path, t: int) -> np.ndarray:
    import torchvision.io as tvio
    import torchvision.transforms.v2.functional as F

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = tvio.decode_jpeg(tvio.read_file(str(p)))
    h, w = x.shape[1:]
    nw, nh = _fit(w, h, t)
    return F.resize(x, [nh, nw], antialias=True).permute(1, 2, 0).numpy()


METHODS = {
    "PIL full decode + resize": pil_full,
    "PIL draft() + resize": pil_draft,
    "cnnkit.io.decode (PIL draft, EXIF, guards) + resize": cnnkit_decode,
    "OpenCV full decode + resize": cv2_full,
    "OpenCV IMREAD_REDUCED + resize": cv2_reduced,
    "torchvision.io.decode_jpeg + resize": torchvision_io,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--target", type=int, default=224)
    ap.add_argument("--work", default="work-data/bench-decode")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    paths = make_photos(Path(args.work), args.n)
    baseline = None
    for name, fn in METHODS.items():
        fn(paths[0], args.target)
        times = []
        for p in paths:
            t0 = time.perf_counter()
            out = fn(p, args.target)
            times.append((time.perf_counter() - t0) * 1000)
            assert min(out.shape[:2]) == args.target and out.shape[2] == 3
        ms = statistics.median(times)
        baseline = baseline or ms
        print(f"{name:55s} {ms:8.1f} ms/image   {baseline / ms:5.2f}x vs PIL full")


if __name__ == "__main__":
    main()
