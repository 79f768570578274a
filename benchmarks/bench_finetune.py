"""``cnnkit finetune`` vs a plain hand-written PyTorch training loop, and the digits results.

``throughput``: the same model, batch size, data (the real digits, ``cnnkit data digits``),
threads, worker count, optimiser and preprocessing (no augmentation) on both sides; the
baseline is torchvision's ``ImageFolder`` + ``DataLoader`` + a bare AdamW loop. Both
time only the training phase of each epoch; the first epoch is a warm-up and the
best later epoch counts. Prints images/s of both and the ratio cnnkit / baseline (goal >= 0.90).

``digits``: LeNet-5 from scratch and ResNet-18 (no pretrained weights can be downloaded
here, so also from scratch, ``--no-pretrained``) trained by ``cnnkit finetune`` on the
digits split, then scored by ``cnnkit classify val``; reports val top-1 and the CPU time
of each run (user + system, all threads).

    python benchmarks/bench_finetune.py throughput [--threads 1] [--epochs 3] [--repeats 2]
    python benchmarks/bench_finetune.py digits [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's cnnkit, whatever is installed
DATA = REPO / "work-data" / "bench-digits"


def ensure_digits() -> Path:
    if not (DATA / "cnnkit-data.json").exists():
        subprocess.run(
            [sys.executable, "-m", "cnnkit", "data", "digits", str(DATA), "--exist-ok"],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
    return DATA


def baseline(model_name: str, imgsz: int, epochs: int, batch_size: int, workers: int, lr: float) -> float:
    """The loop one writes by hand; returns the best images/s over epochs 2..N."""
    import torch
    import torchvision
    from torch import nn
    from torchvision import transforms as T

    from cnnkit.models.registry import get_spec

    torch.manual_seed(0)
    tf = T.Compose([T.Resize(imgsz), T.CenterCrop(imgsz), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    ds = torchvision.datasets.ImageFolder(str(DATA / "train"), transform=lambda im: tf(im.convert("RGB")))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    model = get_spec(model_name).builder(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        seen, t0 = 0, time.perf_counter()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t0))
    return max(rates[1:] or rates)


def cnnkit_rate(model_name: str, imgsz: int, epochs: int, batch_size: int, workers: int, lr: float, out: Path) -> float:
    from cnnkit.api import finetune

    finetune(
        str(DATA),
        task="classify",
        model=model_name,
        pretrained=False,
        epochs=epochs,
        batch_size=batch_size,
        imgsz=imgsz,
        workers=workers,
        lr=lr,
        augment="none",
        scheduler="none",
        out=str(out),
        exist_ok=True,
        progress=False,
    )
    import csv

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return max(float(r["images_per_s"]) for r in rows[1:] or rows)


def throughput(args: argparse.Namespace) -> list[str]:
    import torch

    torch.set_num_threads(args.threads)
    ensure_digits()
    lines = [
        "| model | imgsz | batch | threads | workers | baseline img/s | cnnkit img/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model_name, imgsz in (("lenet5", 32), ("resnet18", 32)):
        for workers in (0, 1):
            # Alternate the sides (A B A B) and keep each side's best: the machine is shared and
            # its load changes from minute to minute.
            b = c = 0.0
            for _ in range(args.repeats):
                b = max(b, baseline(model_name, imgsz, args.epochs, args.batch_size, workers, 1e-3))
                c = max(
                    c,
                    cnnkit_rate(
                        model_name,
                        imgsz,
                        args.epochs,
                        args.batch_size,
                        workers,
                        1e-3,
                        REPO / "work-data" / "bench-ft" / f"{model_name}-{workers}",
                    ),
                )
            line = (
                f"| {model_name} | {imgsz} | {args.batch_size} | {args.threads} | {workers} | {b:.0f} | {c:.0f} | "
                f"{c / b:.2f} |"
            )
            print(line, flush=True)
            lines.append(line)
    return lines


def _run_timed(cmd: list[str]) -> tuple[str, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout, cpu, wall


def digits(args: argparse.Namespace) -> list[str]:
    ensure_digits()
    runs = {
        "LeNet-5 from scratch": [
            "--model",
            "lenet5",
            "--no-pretrained",
            "--epochs",
            "40",
            "--lr",
            "3e-3",
            "--augment",
            "none",
            "--batch-size",
            "32",
        ],
        "ResNet-18, no pretrained weights (offline), 32 px": [
            "--model",
            "resnet18",
            "--no-pretrained",
            "--imgsz",
            "32",
            "--epochs",
            "20",
            "--lr",
            "2e-3",
            "--augment",
            "none",
            "--label-smoothing",
            "0.1",
            "--batch-size",
            "32",
        ],
    }
    lines = [
        "| run | options | val top-1 (finetune) | val top-1 (`classify val`) | best epoch | CPU time | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, opts in runs.items():
        out = REPO / "work-data" / "bench-ft" / name.split(",")[0].split()[0].lower()
        cmd = [
            sys.executable,
            "-m",
            "cnnkit",
            "finetune",
            str(DATA),
            *opts,
            "--workers",
            "0",
            "--threads",
            str(args.threads),
            "--out",
            str(out),
            "--exist-ok",
            "--seed",
            "0",
        ]
        if (out / "last.pt").exists():
            cmd = [
                sys.executable,
                "-m",
                "cnnkit",
                "finetune",
                "--resume",
                str(out),
                "--workers",
                "0",
                "--threads",
                str(args.threads),
            ]
        stdout, cpu, wall = _run_timed(cmd)
        result = json.loads(stdout.strip().splitlines()[-1])
        val_out, _, _ = _run_timed(
            [
                sys.executable,
                "-m",
                "cnnkit",
                "classify",
                "val",
                str(DATA),
                "--weights",
                result["best"],
                "--save-dir",
                str(out / "val"),
                "--exist-ok",
                "-f",
                "json",
            ]
        )
        top1 = json.loads(val_out)["top1"]
        line = (
            f"| {name} | `{' '.join(opts)}` | {result['metrics']['val_acc']:.4f} | {top1:.4f} | "
            f"{result['metrics']['epoch']} | {cpu / 60:.1f} min | {wall / 60:.1f} min |"
        )
        print(line, flush=True)
        lines.append(line)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["throughput", "digits"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="throughput: alternating runs per side")
    args = p.parse_args()
    stamp = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores (shared)"
    lines = throughput(args) if args.part == "throughput" else digits(args)
    print(f"\n{args.part}, {stamp}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
