"""onnxruntime vs PyTorch throughput on CPU for exported models (same inputs, same thread count).

Baseline: the PyTorch network as `cnnkit classify|segment|detect` runs it (eval,
inference_mode, channels_last; the YOLO network fused). cnnkit side: the ONNX file
`cnnkit export --dynamic-batch` writes, run by onnxruntime's CPU provider as
`--backend onnxruntime` runs it. Only the network is timed: decoding, letterboxing and
NMS are the same code on both backends. Throughput does not depend on the weights, so
classifiers without cached weights are measured with random ones. Models are taken by
registry name, so a retrained bundled model is measured as it is now.

    PYTHONPATH=. python benchmarks/bench_export.py [--threads 1] [--seconds 2] [--rounds 2] [--bundled NAMES]
        [--random resnet18,mobilenet_v3_small] [--segment shapes-unet] [--detect shapes-yolov8n]
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
    from cnnkit.models.loader import Loaded, resolve
    from cnnkit.models.preprocess import Preprocess
    from cnnkit.models.registry import get_spec

    if not random_weights:
        return resolve("classify", name, None, default=name)
    spec = get_spec(name)
    return Loaded(spec.builder(num_classes=1000), name, [str(i) for i in range(1000)], Preprocess(256, 224), spec, {})


def classifier_job(name: str, random_weights: bool, folder: Path):
    """(label, task, side, PyTorch callable, onnxruntime module) of a classifier."""
    from cnnkit.export import export_module, load_exported

    loaded = loaded_for(name, random_weights)
    path = folder / f"{name}.onnx"
    export_module(loaded, "classify", path, dynamic_batch=True)
    return (
        name + (" (random weights)" if random_weights else ""),
        "classify",
        loaded.preprocess.crop,
        _channels_last(loaded.module),
        load_exported(path, "classify").module,
    )


def segmenter_job(name: str, folder: Path):
    """The registry segmenter ``name`` at its own size, padded to a multiple of 32 as `cnnkit segment` feeds it."""
    from cnnkit.export import export_module, load_exported
    from cnnkit.models.loader import resolve

    loaded = resolve("segment", name)
    path = folder / f"{name}.onnx"
    export_module(loaded, "segment", path, dynamic_batch=True)
    side = -(-loaded.preprocess.crop // 32) * 32
    return name, "segment", side, _channels_last(loaded.module), load_exported(path, "segment").module


def detector_job(name: str, folder: Path):
    """The registry YOLO ``name``: its fused network as `cnnkit detect` runs it, and its ultralytics ONNX export."""
    from cnnkit.device import Runtime
    from cnnkit.export import export_model, load_exported
    from cnnkit.tasks.detect.predict import load_backend

    backend = load_backend(name, None, Runtime.create("cpu"), None)
    path = folder / f"{name}.onnx"
    export_model(name, out=path, dynamic_batch=True)
    return name, "detect", backend.imgsz, _channels_last(backend.net), load_exported(path, "detect").module


def _channels_last(module):
    import torch

    model = module.eval().float().to(memory_format=torch.channels_last)

    def run(x):
        with torch.inference_mode():
            return model(x.contiguous(memory_format=torch.channels_last))

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bundled", default=None, help="comma-separated names [default: every bundled classifier]")
    ap.add_argument("--random", default="resnet18,mobilenet_v3_small")
    ap.add_argument("--segment", default="shapes-unet", help="comma-separated registry segmenters ('' for none)")
    ap.add_argument("--detect", default="shapes-yolov8n", help="comma-separated registry YOLO detectors ('' for none)")
    ap.add_argument("--seconds", type=float, default=4.0, help="measuring time of each rate")
    ap.add_argument(
        "--rounds", type=int, default=2, help="alternating torch/onnxruntime rounds; the best of each counts"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import onnxruntime
    import torch

    from cnnkit.models.registry import list_models

    bundled = (
        args.bundled.split(",")
        if args.bundled
        else [s.name for s in list_models(task="classify") if s.source == "bundled"]
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        builders = [lambda n=n: classifier_job(n, False, folder) for n in bundled if n]
        builders += [lambda n=n: classifier_job(n, True, folder) for n in args.random.split(",") if n]
        builders += [lambda n=n: segmenter_job(n, folder) for n in args.segment.split(",") if n]
        builders += [lambda n=n: detector_job(n, folder) for n in args.detect.split(",") if n]
        for build in builders:
            torch.set_num_threads(args.threads)  # before the session is made: it takes torch's thread count
            label, task, size, run_torch, ort_module = build()
            torch.set_num_threads(args.threads)  # importing ultralytics changes it
            for batch in (1, 16 if size <= 96 else 8):
                gen = torch.Generator().manual_seed(0)
                x = (
                    torch.rand(batch, 3, size, size, generator=gen)
                    if task == "detect"
                    else torch.randn(batch, 3, size, size, generator=gen)
                )
                t = o = 0.0
                for _ in range(args.rounds):  # alternate, best of each: the machine's load drifts
                    t = max(t, rate(run_torch, x, args.seconds))
                    o = max(o, rate(ort_module, x, args.seconds))
                rows.append((label, task, size, batch, t, o, o / t))
                print(
                    f"{label:>22} {task:>8} {size:>4}px batch {batch:>2}: torch {t:8.1f} img/s  "
                    f"onnxruntime {o:8.1f} img/s  ratio {o / t:.2f}",
                    flush=True,
                )

    lines = [
        "# Export: onnxruntime vs PyTorch on CPU",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `PYTHONPATH=. python benchmarks/bench_export.py"
        f" --threads {args.threads} --seconds {args.seconds:g} --rounds {args.rounds}` on {platform.machine()} with {os.cpu_count()} cores (shared with other jobs),"
        f" torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each side.",
        "Baseline: the PyTorch network with eval + inference_mode + channels_last, as `cnnkit classify|segment|detect` runs it"
        " (YOLO fused); cnnkit: the `cnnkit export --dynamic-batch` ONNX file on onnxruntime's CPU provider (as `--backend"
        " onnxruntime` runs it). The network alone is timed; decoding, letterboxing and NMS are shared code."
        f" Each rate is the best of {args.rounds} alternating rounds of {args.seconds:g} s.",
        "",
        "| model | task | input | batch | PyTorch img/s | onnxruntime img/s | ratio (ort / torch) |",
        "|---|---|---|---|---|---|---|",
        *[f"| {n} | {k} | {s}×{s} | {b} | {t:.1f} | {o:.1f} | {r:.2f} |" for n, k, s, b, t, o, r in rows],
        "",
    ]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
