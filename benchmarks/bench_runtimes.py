"""`--backend auto` vs PyTorch eager on CPU: which runtime per family, end-to-end gain, compile cost, INT8.

Three parts, each a ratio against a baseline measured in the same process (never a pass/fail):

1. **Runtime per family** (what ``cnnkit.runtimes.FAMILY_RUNTIME`` records): forward only, batch 16 at
   the model's size, torch eager (channels_last) vs ONNX Runtime vs OpenVINO on the same ONNX file,
   alternating rounds, best of each.
2. **End to end** through ``cnnkit.benchmark`` (the `cnnkit benchmark` code): `--backend torch` (today's
   eager path) vs the default `auto`, on 640×480 JPEGs, decode included, and the compile cost of the first
   run (cold cache). Also the best runtime's forward-only rate, the limit for the model.
3. **INT8** (``--int8``): ONNX Runtime and OpenVINO on the static-quantized file vs the fp32 file.

Throughput does not depend on the weights: torchvision classifiers are measured with random weights
saved as cnnkit checkpoints (no download).

    PYTHONPATH=. python benchmarks/bench_runtimes.py [--threads 2] [--seconds 2] [--rounds 2]
        [--models resnet18,mobilenet_v3_large,efficientnet_b0,shapes-cnn] [--segment shapes-unet]
        [--detect shapes-yolov8n] [--images 64] [--int8 resnet18,mobilenet_v3_large] [--parts 1,2,3]
        [--out benchmarks/results/runtimes.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path


def rate(fn, x, seconds: float) -> float:
    fn(x)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def random_checkpoint(name: str, folder: Path) -> str:
    """A torchvision classifier with random weights as a cnnkit checkpoint (ImageNet-shaped head and preset)."""
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.registry import get_spec

    spec = get_spec(name, "classify")
    meta = {
        "task": "classify",
        "arch": spec.family,
        "name": name,
        "labels": [f"c{i}" for i in range(1000)],
        "preprocess": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    return str(save_checkpoint(folder / f"{name}.safetensors", spec.builder(num_classes=1000), meta))


def target(name: str, folder: Path) -> str:
    from cnnkit.models.registry import get_spec

    spec = get_spec(name)
    return random_checkpoint(name, folder) if spec.source == "torchvision" else name


def part1(names: list[tuple[str, str]], folder: Path, threads: int, seconds: float, rounds: int) -> list[str]:
    """Forward only: eager vs ONNX Runtime vs OpenVINO per model; returns markdown rows."""
    import torch

    from cnnkit.export import load_exported
    from cnnkit.models.loader import resolve
    from cnnkit.runtimes import size_policy
    from cnnkit.tasks.detect.export import export_yolo

    rows = []
    for task, name in names:
        torch.set_num_threads(threads)
        loaded = resolve(task, target(name, folder) if task == "classify" else name, backend="torch")
        torch.set_num_threads(threads)  # ultralytics changes it on import
        _, side = size_policy(loaded, task, None)
        side = -(-side // 32) * 32
        path = folder / f"{name}.onnx"
        if loaded.runtime == "ultralytics":
            export_yolo(loaded, fmt="onnx", imgsz=side, dynamic_batch=True, out=path, overwrite=True)
            net = loaded.module.model.fuse(verbose=False).eval()
        else:
            from cnnkit.export import export_module

            export_module(loaded, task, path, dynamic_batch=True, overwrite=True)
            net = loaded.module.eval()
        net = net.to(memory_format=torch.channels_last)
        ort = load_exported(path, task, "onnxruntime").module
        ov = load_exported(path, task, "openvino").module
        batch = 16 if side <= 256 else 8
        x = torch.rand(batch, 3, side, side) if task == "detect" else torch.randn(batch, 3, side, side)
        xc = x.contiguous(memory_format=torch.channels_last)
        best = {"torch": 0.0, "onnxruntime": 0.0, "openvino": 0.0}
        with torch.inference_mode():
            for _ in range(rounds):  # alternate, best of each: the machine's load drifts
                best["torch"] = max(best["torch"], rate(net, xc, seconds))
                best["onnxruntime"] = max(best["onnxruntime"], rate(ort, x, seconds))
                best["openvino"] = max(best["openvino"], rate(ov, x, seconds))
        t = best["torch"]
        pick = max(("onnxruntime", "openvino"), key=lambda k: best[k])
        line = (
            f"| {name} | {task} | {side} | {batch} | {t:.1f} | {best['onnxruntime']:.1f} ({best['onnxruntime'] / t:.2f}×) "
            f"| {best['openvino']:.1f} ({best['openvino'] / t:.2f}×) | {pick} |"
        )
        print(line, flush=True)
        rows.append(line)
    return rows


def part2(names: list[tuple[str, str]], folder: Path, threads: int, seconds: float, images: int) -> list[str]:
    """End to end through cnnkit.benchmark: torch vs auto (cold cache, then warm), same images."""
    from cnnkit.benchmark import bench_one, synthetic_images

    os.environ["CNNKIT_CACHE"] = str(folder / "cache")  # a cold cache: the first auto run pays the compile
    paths = synthetic_images(folder / "jpegs", images)
    rows = []
    for task, name in names:
        model = target(name, folder) if task == "classify" else name
        common: dict = {
            "imgsz": None,
            "batch_size": 16,
            "threads": threads,
            "device": "cpu",
            "seconds": seconds,
            "latency_n": 16,
            "data": None,
            "task": task,
        }
        eager = bench_one(model, "torch", paths, **common)
        cold = bench_one(model, "auto", paths, **common)
        warm = bench_one(model, "auto", paths, **common)
        auto = max(cold, warm, key=lambda r: r.e2e_ips)
        line = (
            f"| {name} | {eager.e2e_ips:.1f} | {auto.e2e_ips:.1f} ({auto.e2e_ips / eager.e2e_ips:.2f}×) | "
            f"{auto.runtime} | {eager.forward_ips:.1f} / {auto.forward_ips:.1f} | {auto.e2e_ips / auto.forward_ips:.2f} | "
            f"{eager.decode_ms:.1f} / {eager.model_ms:.1f} | {auto.decode_ms:.1f} / {auto.model_ms:.1f} | "
            f"{auto.p50_ms:.1f} / {auto.p95_ms:.1f} | {cold.load_s:.1f} ({cold.cache}) / {warm.load_s:.1f} ({warm.cache}) | "
            f"{eager.peak_mb:.0f} / {auto.peak_mb:.0f} |"
        )
        print(line, flush=True)
        rows.append(line)
    return rows


def part3(names: list[str], folder: Path, threads: int, seconds: float, rounds: int) -> list[str]:
    """INT8 vs fp32 forward only on ONNX Runtime and OpenVINO (calibrated on synthetic photos)."""
    import torch

    from cnnkit.benchmark import synthetic_images
    from cnnkit.export import export_model, load_exported
    from cnnkit.quantize import export_int8

    cal = folder / "cal"
    synthetic_images(cal, 100)
    rows = []
    for name in names:
        torch.set_num_threads(threads)
        ckpt = random_checkpoint(name, folder)
        fp32, int8 = folder / f"{name}-fp32.onnx", folder / f"{name}-int8.onnx"
        export_model(ckpt, out=fp32, dynamic_batch=True, overwrite=True)
        q = export_int8(ckpt, calibrate=cal, out=int8, overwrite=True)
        x = torch.randn(16, 3, 224, 224)
        best: dict[str, float] = {}
        for _ in range(rounds):
            for runtime in ("onnxruntime", "openvino"):
                for kind, path in (("fp32", fp32), ("int8", int8)):
                    module = load_exported(path, "classify", runtime).module
                    key = f"{runtime} {kind}"
                    best[key] = max(best.get(key, 0.0), rate(module, x, seconds))
        line = (
            f"| {name} | {best['onnxruntime fp32']:.1f} | {best['onnxruntime int8']:.1f} "
            f"({best['onnxruntime int8'] / best['onnxruntime fp32']:.2f}×) | {best['openvino fp32']:.1f} | "
            f"{best['openvino int8']:.1f} ({best['openvino int8'] / best['openvino fp32']:.2f}×) | "
            f"{q.fp32_size_mb:.1f} → {q.size_mb:.1f} | {q.seconds:.0f} |"
        )
        print(line, flush=True)
        rows.append(line)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default="resnet18,mobilenet_v3_large,efficientnet_b0,shapes-cnn")
    ap.add_argument("--segment", default="shapes-unet")
    ap.add_argument("--detect", default="shapes-yolov8n")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--int8", default="resnet18,mobilenet_v3_large")
    ap.add_argument("--parts", default="1,2,3")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    from cnnkit.tasks import TASKS

    for row in TASKS.values():
        row.load_zoo()
    names = [("classify", n) for n in args.models.split(",") if n]
    names += [("segment", n) for n in args.segment.split(",") if n]
    names += [("detect", n) for n in args.detect.split(",") if n]
    parts = set(args.parts.split(","))
    out = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `PYTHONPATH=. python "
        f"benchmarks/bench_runtimes.py --threads {args.threads} --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--images {args.images} --parts {args.parts}` on {platform.machine()}, {os.cpu_count()} cores (shared with "
        f"other jobs), torch {torch.__version__}.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "1" in parts:
            out += [
                "### Forward only: runtime per family",
                "",
                "| model | task | px | batch | torch eager img/s | ONNX Runtime | OpenVINO | faster |",
                "|---|---|---|---|---|---|---|---|",
                *part1(names, folder, args.threads, args.seconds, args.rounds),
                "",
            ]
        if "2" in parts:
            out += [
                "### End to end: `--backend torch` vs the default `auto`",
                "",
                "| model | eager img/s | auto img/s | auto ran | forward-only img/s eager / auto | auto e2e / forward | "
                "eager decode / model ms | auto decode / model ms | auto p50 / p95 ms | load s: cold / warm | "
                "peak MB eager / auto |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
                *part2(names, folder, args.threads, args.seconds, args.images),
                "",
            ]
        if "3" in parts and args.int8:
            out += [
                "### INT8 (static, QDQ) vs fp32, forward only, batch 16 at 224 px",
                "",
                "| model | ORT fp32 | ORT int8 | OpenVINO fp32 | OpenVINO int8 | MB | quantize s |",
                "|---|---|---|---|---|---|---|",
                *part3(args.int8.split(","), folder, args.threads, args.seconds, args.rounds),
                "",
            ]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
