"""``--engine ray`` vs a local run on the same cores, in the same run; and driver memory over many
remote (S3) images with Parquet output.

Throughput: the same JPEGs, model and batch size; the local run uses 2 torch threads and 2 decode
threads; Ray runs on a private 2-CPU head on 127.0.0.1 with 1 actor (2 CPUs, 2 threads) and 2 actors
(1 CPU, 1 thread each). Each run goes over N and then 2N images: images/s end to end at 2N (Ray's
actor start-up and model loading included) and the marginal images/s N / (T(2N) - T(N)), the
steady state a long job sees (medians of --rounds interleaved rounds); ratios are Ray / local,
measured in the same run. Memory: peak RSS of the ``cnnkit classify`` process (the driver, with
``--memory-engine ray``) over N objects on a moto S3 server on loopback, written to Parquet, for two N
(goal: flat).

    python benchmarks/bench_ray.py [--n 256] [--rounds 3] [--model shapes-cnn] [--batch-size 16] \
        [--memory 1000,10000] [--memory-engine local|ray]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _images import photo_folder  # noqa: E402


def timed(records) -> tuple[float, int]:
    """(seconds, records) to drain an iterator of records."""
    t0 = time.perf_counter()
    n = 0
    for rec in records:
        assert rec.error is None, rec.error
        n += 1
    return time.perf_counter() - t0, n


def throughput(folder: Path, n: int, model: str, batch_size: int, rounds: int) -> list[dict]:
    """Each run over the first ``n`` and then all ``2n`` photos: end-to-end images/s at 2n, and the
    marginal images/s (n / (T(2n) - T(n))), which cancels start-up; medians of ``rounds`` (Ray: actor processes, torch
    import and model loading in each actor; local: model loading)."""
    import cnnkit
    import cnnkit.ray

    files = sorted(str(p) for p in folder.glob("*.jpg"))[: 2 * n]
    list(cnnkit.classify(files[:2], model=model))  # torch and cnnkit imported before any clock starts
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    runs = {
        "local": lambda fs: cnnkit.classify(fs, model=model, batch_size=batch_size, workers=2, threads=2, stream=True),
        "ray, 1 actor": lambda fs: cnnkit.ray.predict(
            fs, "classify", actors=1, cpus_per_actor=2, batch_size=batch_size, workers=2, model=model
        ),
        "ray, 2 actors": lambda fs: cnnkit.ray.predict(
            fs, "classify", actors=2, cpus_per_actor=1, batch_size=batch_size, workers=2, model=model
        ),
    }
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for r in range(rounds):  # interleaved, so a change of load on the machine hits every run alike
            for size in (n, 2 * n):
                for name, run in runs.items():
                    took, count = timed(run(files[:size]))
                    assert count == size
                    samples.setdefault((name, size), []).append(took)
                    print(
                        f"  round {r + 1}: {name} over {size}: {took:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True
                    )
    finally:
        ray.shutdown()
    seconds = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for name in runs:
        total = seconds[name, 2 * n]
        extra = total - seconds[name, n]  # under a changing load this can be <= 0: then no marginal figure
        rows.append(
            {
                "run": name,
                "seconds_n": seconds[name, n],
                "seconds_2n": total,
                "img_s": 2 * n / total,
                "marginal_img_s": n / extra if extra > 0 else None,
            }
        )
    for r in rows:
        r["ratio"] = r["img_s"] / rows[0]["img_s"]
        base = rows[0]["marginal_img_s"]
        r["marginal_ratio"] = r["marginal_img_s"] / base if r["marginal_img_s"] and base else None
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def driver_memory(counts: list[int], work: Path, engine: str = "local") -> list[dict]:
    """Peak RSS of ``cnnkit classify s3://…/`` → Parquet, for each count of small objects. With ``engine``
    ``ray`` that process is the driver of a private Ray cluster (1 actor) that it starts: the actor's own
    memory and Ray's processes are not in the figure, which is the driver's."""
    import io

    import boto3
    import numpy as np
    from moto.server import ThreadedMotoServer
    from PIL import Image

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        PYTHONPATH=str(HERE.parent),
    )
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="bench")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    body = buf.getvalue()
    rows = []
    try:
        done = 0
        for count in sorted(counts):
            with ThreadPoolExecutor(8) as pool:  # boto3 clients are thread-safe
                list(
                    pool.map(
                        lambda i: client.put_object(Bucket="bench", Key=f"many/img_{i:06d}.png", Body=body),
                        range(done, count),
                    )
                )
            done = count
            out = work / f"many-{count}.parquet"
            out.unlink(missing_ok=True)
            code = (
                "import resource, subprocess, sys\n"
                "from cnnkit.cli import main\n"
                f"sys.argv = ['cnnkit', 'classify', 's3://bench/many/', '-q', '-b', '32', '-o', '{out}'"
                + (", '--engine', 'ray', '--actors', '1'" if engine == "ray" else "")
                + "]\n"
                "code = 0\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
                "sys.exit(code)\n"
            )
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - t0
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(out).metadata
            assert res.returncode == 0, res.stderr[-2000:]
            rows.append(
                {
                    "engine": engine,
                    "objects": count,
                    "peak_rss_mb": float(res.stdout.strip().splitlines()[-1]),
                    "seconds": seconds,
                    "rows": meta.num_rows,
                    "row_groups": meta.num_row_groups,
                }
            )
    finally:
        server.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--model", default="shapes-cnn")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--memory", default="1000,10000", help="object counts for the driver-memory figure ('' skips)")
    ap.add_argument("--memory-engine", choices=("local", "ray"), default="local", help="engine of the memory figure")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--work", default="/tmp/cnnkit-bench-ray")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"n": args.n, "model": args.model, "batch_size": args.batch_size}
    if not args.skip_throughput:
        folder = photo_folder(work / "photos", 2 * args.n)
        result["throughput"] = throughput(folder, args.n, args.model, args.batch_size, args.rounds)
        for r in result["throughput"]:
            marginal = (
                f"{r['marginal_img_s']:6.1f} img/s marginal ({r['marginal_ratio']:.2f}x)"
                if r["marginal_ratio"]
                else "no marginal figure (T(2N) <= T(N): noise over the work)"
            )
            print(
                f"{r['run']:>14}: {r['img_s']:6.1f} img/s end to end over {2 * args.n} ({r['ratio']:.2f}x), {marginal}",
                flush=True,
            )
    if args.memory:
        result["memory"] = driver_memory([int(c) for c in args.memory.split(",")], work, args.memory_engine)
        for r in result["memory"]:
            print(
                f"{r['engine']}: {r['objects']:>6} S3 objects → parquet: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.0f} s, "
                f"{r['rows']} rows in {r['row_groups']} row groups",
                flush=True,
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
