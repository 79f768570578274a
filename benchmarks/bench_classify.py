"""cnnkit classify vs a plain hand-written PyTorch loop, in the same run.

Same model, weights, batch size, threads and preprocessing; the baseline decodes with
PIL in the main thread, preprocesses, batches and runs the model: what one writes by
hand. Prints images/s of both and the ratio cnnkit / baseline (goal ≥ 0.95). Also
times ``cnnkit --help`` and measures peak memory of ``cnnkit classify`` (the default backend) over
``--memory`` counts of images, 500 and 2,000 unless said (goal: flat).

    python benchmarks/bench_classify.py [--n 256] [--threads 2] [--batch-size 32]
    python benchmarks/bench_classify.py --memory 500,2000,10000 --memory-only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _images import photo_folder  # noqa: E402


def baseline(files: list[Path], model, pre, batch_size: int) -> float:
    import numpy as np
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            batch = []
            for f in files[i : i + batch_size]:
                with Image.open(f) as img:
                    batch.append(pre(np.asarray(img.convert("RGB"))))
            model(torch.stack(batch).contiguous(memory_format=torch.channels_last)).softmax(1).topk(5)
    return time.perf_counter() - t0


def cnnkit_run(folder: Path, model_name: str, weights: str | None, batch_size: int) -> float:
    import cnnkit

    t0 = time.perf_counter()
    for rec in cnnkit.classify(str(folder), model=model_name, weights=weights, batch_size=batch_size, stream=True):
        assert rec.error is None, rec.error
    return time.perf_counter() - t0


def peak_rss_mb(folder: Path, limit: int) -> float:
    code = (
        "import resource, sys, cnnkit\n"
        f"files = sorted(__import__('glob').glob('{folder}/*.jpg'))[:{limit}]\n"
        "for r in cnnkit.classify(files, stream=True, batch_size=32): pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def help_time(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnkit", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--work", default="work-data/bench")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory", default="500,2000", help="image counts to measure peak memory over")
    p.add_argument("--memory-only", action="store_true", help="measure peak memory only")
    args = p.parse_args()

    import torch
    import torchvision

    from cnnkit.models.loader import resolve

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    counts = [int(n) for n in args.memory.split(",")]
    folder = photo_folder(work / "photos", max(args.n, max(counts) if not args.skip_memory else args.n))
    if args.memory_only:
        peaks = {n: round(peak_rss_mb(folder, n), 1) for n in counts}
        print(json.dumps({"peak_rss_mb": peaks, "batch_size": 32, "model": "shapes-cnn"}))
        return
    files = sorted(folder.glob("*.jpg"))[: args.n]
    subset = work / f"photos{args.n}"
    subset.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (subset / f.name).exists():
            os.link(f, subset / f.name)

    resnet = work / "resnet18-random.pth"
    if not resnet.exists():
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)

    results = {"images": args.n, "threads": args.threads, "batch_size": args.batch_size, "models": {}}
    for name, weights in (("shapes-cnn", None), ("resnet18", str(resnet))):
        loaded = resolve("classify", name, weights, default="shapes-cnn")
        model = loaded.module.eval().to(memory_format=torch.channels_last)
        baseline(files[: args.batch_size], model, loaded.preprocess, args.batch_size)  # warm-up
        base = baseline(files, model, loaded.preprocess, args.batch_size)
        ours = cnnkit_run(subset, name, weights, args.batch_size)
        results["models"][name] = {
            "baseline_img_s": round(args.n / base, 1),
            "cnnkit_img_s": round(args.n / ours, 1),
            "ratio": round(base / ours, 3),
        }
        print(
            f"{name:12s} baseline {args.n / base:7.1f} img/s   cnnkit {args.n / ours:7.1f} img/s   "
            f"ratio {base / ours:.3f}",
            flush=True,
        )
    results["help_seconds"] = round(help_time(), 3)
    print(f"cnnkit --help: {results['help_seconds']:.3f} s (median of 5)")
    if not args.skip_memory:
        results["peak_rss_mb"] = {n: round(peak_rss_mb(folder, n), 1) for n in counts}
        print("peak RSS:", ", ".join(f"{n} images {mb} MB" for n, mb in results["peak_rss_mb"].items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
