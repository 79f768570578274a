"""Tracking quality (IDF1, MOTA, line counts) on synthetic videos, and video throughput vs ultralytics.

Quality: ``--videos`` sequences of ``cnnkit data shapes --video`` (seed ``--seed``, never used to
choose any setting: ``shapes-bytetrack``'s thresholds were chosen on seed 1), tracked with the
bundled detector by each tracker in ``--trackers`` and scored by ``cnnkit track val``'s code
(motmetrics, ground truth under 0.5 visibility neither missed nor false).

Throughput: one longer synthetic video (``--frames`` at 256 px), in one process, alternating
``--repeats`` times: ``cnnkit.detect`` vs ultralytics ``YOLO.predict(stream=True)`` and
``cnnkit.track`` vs ``YOLO.track(stream=True)`` with the same weights, inference size, thresholds
tracker yaml and NMS IoU (the model's own for tracking). Model loading is outside the timed part for both. Reported from the same run: frames/s,
the ratio (cnnkit / ultralytics, > 1: cnnkit faster) of each round's neighbouring runs and their median,
and CPU milliseconds per frame (all threads of the process), the figure a shared machine disturbs least.

    python benchmarks/bench_track.py [--videos 10] [--seed 2026] [--frames 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def quality(data: Path, trackers: list[str], threads: int | None) -> dict[str, dict]:
    from cnnkit.tasks.track.val import validate

    out = {}
    for name in trackers:
        m = validate(data, tracker=name, threads=threads)
        out[name] = {
            "idf1": m["overall"]["idf1"],
            "mota": m["overall"]["mota"],
            "id_switches": m["overall"]["num_switches"],
            "false_positives": m["overall"]["num_false_positives"],
            "misses": m["overall"]["num_misses"],
            "counts_exact": m["counts_exact"],
            "counts": m["counts"],
            "per_video": {k: {"idf1": v["idf1"], "mota": v["mota"]} for k, v in m["sequences"].items()},
        }
        print(
            f"{name:18s} IDF1 {out[name]['idf1']:.3f}  MOTA {out[name]['mota']:.3f}  IDsw {out[name]['id_switches']}  "
            f"FP {out[name]['false_positives']}  FN {out[name]['misses']}  counts exact {m['counts_exact']}",
            flush=True,
        )
    return out


def throughput(video: Path, frames: int, repeats: int, threads: int | None, batch_size: int) -> dict[str, float]:
    import torch

    import cnnkit
    from cnnkit import ultralytics_adapter
    from cnnkit.models.hub import bundled_path

    weights = str(bundled_path("shapes-yolov8n.pt"))
    tracker_yaml = str(REPO / "cnnkit" / "tasks" / "track" / "trackers" / "shapes-bytetrack.yaml")
    if threads:
        torch.set_num_threads(threads)
    detector = cnnkit.load("detect", conf=0.25, threads=threads)
    from cnnkit.tasks.track.predict import track_defaults

    nms = {"iou": track_defaults("shapes-yolov8n")["iou"]}  # cnnkit track's NMS IoU for the model, given to both
    tracker = cnnkit.load("track", tracker=tracker_yaml, conf=0.1, threads=threads, **nms)
    yolo = ultralytics_adapter.yolo(weights)
    torch_threads = torch.get_num_threads()

    def run_cnnkit_detect() -> int:
        return sum(1 for _ in detector.stream(str(video), batch_size=batch_size))

    def run_cnnkit_track() -> int:
        return sum(1 for _ in tracker.stream(str(video), batch_size=batch_size))

    def run_yolo_predict() -> int:
        torch.set_num_threads(torch_threads)
        return sum(1 for _ in yolo.predict(str(video), stream=True, imgsz=256, conf=0.25, device="cpu", verbose=False))

    def run_yolo_track() -> int:
        torch.set_num_threads(torch_threads)
        return sum(
            1
            for _ in yolo.track(
                str(video),
                stream=True,
                imgsz=256,
                conf=0.1,
                device="cpu",
                verbose=False,
                tracker=tracker_yaml,
                persist=False,
                **nms,
            )
        )

    runs = {
        "cnnkit detect": run_cnnkit_detect,
        "yolo predict": run_yolo_predict,
        "cnnkit track": run_cnnkit_track,
        "yolo track": run_yolo_track,
    }
    for fn in runs.values():  # warm-up: first calls build letterbox caches, trackers, thread pools
        fn()
    # wall seconds and CPU seconds (every thread of the process: decoding, preprocessing, the runtime's
    # own threads) per run; on a shared machine the CPU seconds say what each tool costs, the wall
    # seconds what it got out of the cores it was left
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            torch.set_num_threads(torch_threads)
            t0, c0 = time.perf_counter(), time.process_time()
            n = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            assert n == frames, (name, n)
    fps = {k: round(frames / statistics.median(v), 2) for k, v in wall.items()}
    cpu_ms = {k: round(1000 * statistics.median(v) / frames, 2) for k, v in cpu.items()}
    pairs = {"detect": ("cnnkit detect", "yolo predict"), "track": ("cnnkit track", "yolo track")}
    # each round's ratio (the two runs were neighbours in time), then their median
    rounds = {k: [round(wall[b][i] / wall[a][i], 3) for i in range(repeats)] for k, (a, b) in pairs.items()}
    ratios = {k: round(statistics.median(v), 3) for k, v in rounds.items()}
    cpu_ratios = {k: round(cpu_ms[b] / cpu_ms[a], 3) for k, (a, b) in pairs.items()}
    print(f"{frames} frames, 256x256, torch threads {torch_threads}, median of {repeats}:")
    for k, v in fps.items():
        print(f"  {k:14s} {v:7.2f} frames/s  {cpu_ms[k]:7.2f} CPU ms/frame")
    print(f"  ratio cnnkit/ultralytics (wall, median of rounds): {ratios}  per round: {rounds}")
    print(f"  ratio of CPU time per frame (ultralytics/cnnkit): {cpu_ratios}")
    return {
        "fps": fps,
        "cpu_ms_per_frame": cpu_ms,
        "ratio": ratios,
        "ratio_per_round": rounds,
        "cpu_ratio": cpu_ratios,
        "torch_threads": torch_threads,
        "batch_size": batch_size,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=10)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--frames", type=int, default=300, help="frames of the throughput video")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads for both tools (default: torch's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trackers", default="shapes-bytetrack,bytetrack,botsort")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--work", default=str(REPO / "work-data" / "bench-track"))
    args = p.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "true")
    from cnnkit.data.moving import write_sequences

    work = Path(args.work)
    data = work / f"shapes-seed{args.seed}-{args.videos}"
    if not (data / "summary.json").is_file():
        write_sequences(data, args.videos, seed=args.seed, frames=60)
    result: dict = {
        "videos": args.videos,
        "seed": args.seed,
        "frames_per_video": 60,
        "quality": quality(data, args.trackers.split(","), args.threads),
    }
    if not args.skip_throughput:
        long = work / f"long-{args.frames}"
        if not (long / "summary.json").is_file():
            write_sequences(long, 1, seed=99, frames=args.frames)
        result["throughput"] = throughput(
            long / "shapes-000.mp4", args.frames, args.repeats, args.threads, args.batch_size
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
