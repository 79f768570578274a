"""``cnnkit detect`` vs ``yolo predict`` (the ultralytics CLI), in the same run.

Same weights (the bundled ``shapes-yolov8n.pt`` unless ``--weights``), same folder of
JPEGs (shapes scenes rendered at ``--size`` px), same inference size, CPU. Each command
is timed end to end as a user runs it (process start to exit, model load included),
alternating, ``--repeats`` times; the median is reported, with the ratio
``yolo predict`` time / ``cnnkit detect`` time (> 1: cnnkit is faster). ``cnnkit`` runs
once with torch's default threads and once with ``--threads 1`` (ultralytics itself
sets torch to ``cpu_count - 1`` threads on CPU). The boxes of both are compared too.

    python benchmarks/bench_detect.py [--n 160] [--size 512] [--imgsz 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def scenes_folder(folder: Path, n: int, size: int, seed: int = 777, height: int | None = None) -> Path:
    """``n`` shapes scenes as JPEGs (reused when already there), ``size`` wide and ``height`` high (stretched)."""
    from PIL import Image

    from cnnkit.data.shapes import scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"scene_{i:05d}.jpg"
        if not path.exists():
            img = Image.fromarray(scene(seed, i, size=size).image)
            (img.resize((size, height)) if height and height != size else img).save(path, quality=90)
    return folder


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def yolo_cli() -> list[str]:
    """ultralytics' ``yolo`` command beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("yolo")
    exe = str(beside) if beside.is_file() else shutil.which("yolo")
    if exe is None:
        raise SystemExit("no `yolo` command (ultralytics' CLI) beside this Python or on PATH")
    return [exe]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=160)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--height", type=int, default=None, help="JPEG height (default: --size, square)")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--weights", default=str(REPO / "cnnkit" / "weights" / "shapes-yolov8n.pt"))
    p.add_argument("--work", default=str(REPO / "work-data" / "bench-detect"))
    args = p.parse_args()

    work = Path(args.work)
    height = args.height or args.size
    folder = scenes_folder(work / f"scenes{args.n}-{args.size}x{height}", args.n, args.size, height=height)
    out = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    env = {**os.environ, "YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "PYTHONPATH": str(REPO)}
    env.setdefault("YOLO_CONFIG_DIR", str(work / "yolo-config"))
    cnnkit = [
        sys.executable,
        "-m",
        "cnnkit",
        "-q",
        "detect",
        str(folder),
        "--model",
        args.weights,
        "--imgsz",
        str(args.imgsz),
        "--batch-size",
        str(args.batch_size),
        "--format",
        "jsonl",
        "--exist-ok",
        "--device",
        "cpu",
    ]
    commands = {
        "yolo predict": [
            *yolo_cli(),
            "predict",
            f"model={args.weights}",
            f"source={folder}",
            f"imgsz={args.imgsz}",
            "device=cpu",
            "save=False",
            "verbose=False",
            f"project={out}",
            "name=yolo",
            "exist_ok=True",
            "save_txt=True",
        ],
        "cnnkit detect": [*cnnkit, "--output", str(out / "cnnkit.jsonl")],
        "cnnkit detect --threads 1": [*cnnkit, "--threads", "1", "--output", str(out / "cnnkit1.jsonl")],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["yolo predict"]
    print(
        f"{args.n} JPEGs of {args.size}x{height}, imgsz {args.imgsz}, CPU, {os.cpu_count()} cores, "
        f"median of {args.repeats} (wall time, process start to exit)"
    )
    for name, t in med.items():
        print(f"{name:28s} {t:7.2f} s  {args.n / t:6.1f} img/s  ratio yolo/this {base / t:5.2f}")

    n_ours = sum(len(json.loads(line)["predictions"]) for line in (out / "cnnkit.jsonl").read_text().splitlines())
    labels = list((out / "yolo" / "labels").glob("*.txt")) if (out / "yolo" / "labels").is_dir() else []
    n_theirs = sum(len(f.read_text().splitlines()) for f in labels)
    print(f"boxes: cnnkit {n_ours}, yolo predict {n_theirs}")
    print(
        json.dumps(
            {
                "images": args.n,
                "size": args.size,
                "height": height,
                "imgsz": args.imgsz,
                "median_s": med,
                "ratio_vs_yolo": {k: round(base / t, 3) for k, t in med.items()},
                "boxes": {"cnnkit": n_ours, "yolo": n_theirs},
            }
        )
    )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
