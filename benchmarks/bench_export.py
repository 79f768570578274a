"""onnxruntime vs PyTorch throughput on CPU for exported classifiers (same inputs, same thread count).

Baseline: the PyTorch module as `cnnkit classify` runs it (eval, inference_mode,
channels_last). cnnkit side: the ONNX file `cnnkit export --dynamic-batch` writes, run by
onnxruntime's CPU provider as `classify --backend onnxruntime` runs it. Throughput does not
depend on the weights, so architectures without cached weights are measured with random ones.

    PYTHONPATH=. python benchmarks/bench_export.py [--threads 1] [--bundled NAMES] [--random resnet18,mobilenet_v3_small]
        [--out benchmarks/results/export.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path


def rate(fn, batch, seconds: float, warmup: int = 3) -> float:
    """Images per second of ``fn(batch)``, repeated for at least ``seconds``."""
    for _ in range(warmup):
        fn(batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn(batch)
        n += 1
    return n * len(batch) / (time.perf_counter() - t0)


def loaded_for(name: str, random_weights: bool):
    from cnnkit.models.loader import Loaded, load_model
    from cnnkit.models.preprocess import Preprocess
    from cnnkit.models.registry import get_spec

    if not random_weights:
        return load_model(name, None, "classify", default=name)
    spec = get_spec(name)
    return Loaded(spec.builder(num_classes=1000), name, [str(i) for i in range(1000)], Preprocess(256, 224), spec, {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bundled", default=None, help="comma-separated names [default: every bundled classifier]")
    ap.add_argument("--random", default="resnet18,mobilenet_v3_small")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import onnxruntime
    import torch

    from cnnkit.export import export_module, load_exported

    torch.set_num_threads(args.threads)
    rows = []
    from cnnkit.models.registry import list_models

    bundled = args.bundled.split(",") if args.bundled else [s.name for s in list_models(task="classify") if s.source == "bundled"]
    jobs = [(n, False) for n in bundled if n] + [(n, True) for n in args.random.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        for name, random_weights in jobs:
            loaded = loaded_for(name, random_weights)
            size = loaded.preprocess.crop
            path = Path(tmp) / f"{name}.onnx"
            export_module(loaded, "classify", path, dynamic_batch=True)
            model = loaded.module.eval().to(memory_format=torch.channels_last)
            ort_module = load_exported(path, "classify").module

            def run_torch(x):
                with torch.inference_mode():
                    return model(x.contiguous(memory_format=torch.channels_last))

            for batch in (1, 16 if size <= 96 else 8):
                x = torch.randn(batch, 3, size, size)
                t = rate(run_torch, x, args.seconds)
                o = rate(ort_module, x, args.seconds)
                rows.append((name + (" (random weights)" if random_weights else ""), size, batch, t, o, o / t))
                print(f"{name:>22} {size:>4}px batch {batch:>2}: torch {t:8.1f} img/s  onnxruntime {o:8.1f} img/s  ratio {o / t:.2f}", flush=True)

    lines = [
        "# Export: onnxruntime vs PyTorch on CPU",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `PYTHONPATH=. python benchmarks/bench_export.py"
        f" --threads {args.threads}` on {platform.machine()} with {os.cpu_count()} cores (shared with other jobs),"
        f" torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each side.",
        "Baseline: PyTorch eval + inference_mode + channels_last (as `cnnkit classify` runs it); cnnkit: the"
        " `cnnkit export --dynamic-batch` ONNX file on onnxruntime's CPU provider (as `--backend onnxruntime` runs it).",
        "",
        "| model | input | batch | PyTorch img/s | onnxruntime img/s | ratio (ort / torch) |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {s}×{s} | {b} | {t:.1f} | {o:.1f} | {r:.2f} |" for n, s, b, t, o, r in rows],
        "",
    ]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
