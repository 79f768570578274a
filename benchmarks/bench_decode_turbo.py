"""cnnkit's decode with and without libjpeg-turbo through simplejpeg (same DCT scaling, identical pixels).

PIL path = `cnnkit.io.decode.decode` with simplejpeg hidden (what cnnkit did before); simplejpeg path =
the same call as shipped. Median ms per file over the folder, best of 3 alternating rounds, one thread.

    PYTHONPATH=. python benchmarks/bench_decode_turbo.py [--n 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from PIL import Image

import cnnkit.io.decode as dec
from cnnkit.benchmark import synthetic_images


def median_ms(paths: list[str], side: int | None) -> float:
    times = []
    for p in paths:
        t0 = time.perf_counter()
        dec.decode(p, min_side=side)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = synthetic_images(Path(tmp) / "small", args.n)
        big = []
        for i, p in enumerate(small[: max(2, args.n // 2)]):
            big.append(str(Path(tmp) / f"big{i}.jpg"))
            Image.open(p).resize((4000, 3000)).save(big[-1], quality=92)
        print("| JPEG | decoded for | PIL (draft) ms | simplejpeg ms | speed-up |")
        print("|---|---|---|---|---|")
        for label, paths in (("640×480", small), ("4000×3000", big)):
            for side in (224, 640, None):
                pil = turbo = float("inf")
                for _ in range(3):
                    with mock.patch.object(dec, "_simplejpeg", lambda: None):
                        pil = min(pil, median_ms(paths, side))
                    turbo = min(turbo, median_ms(paths, side))
                what = f"{side} px" if side else "full size"
                print(f"| {label} | {what} | {pil:.2f} | {turbo:.2f} | {pil / turbo:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
