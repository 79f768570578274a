"""``cnnkit benchmark``: how fast each model runs on each backend here, and what it scores.

Like timm's ``benchmark.py`` and ``yolo benchmark``: per model × backend, one :class:`Row` with
end-to-end images/s through the real predictor (decode threads included), forward-only images/s of
the network on a full batch, per-image decode and model time and p50/p95 latency at batch 1, peak
memory, the first load's cost (the compile, when the cache was cold), and the metric on ``data`` when
given. Figures are measured, never compared to a threshold: speed depends on the machine and its load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, OptionError, UsageError

log = logging.getLogger("cnnkit")

COLUMNS = (
    "model",
    "task",
    "backend",
    "runtime",
    "precision",
    "imgsz",
    "batch_size",
    "threads",
    "load_s",
    "cache",
    "e2e_ips",
    "forward_ips",
    "decode_ms",
    "model_ms",
    "p50_ms",
    "p95_ms",
    "peak_mb",
    "metric",
    "value",
)
METRICS = {"classify": "top1", "segment": "miou", "detect": "mAP50"}


@dataclass
class Row:
    """One model on one backend. ``runtime`` is what ran (``auto`` resolves to one); ``cache`` says whether
    the compiled file was ``built`` in this run (then ``load_s`` includes the compile) or a ``hit``."""

    model: str
    task: str
    backend: str
    runtime: str
    precision: str
    imgsz: int | None
    batch_size: int
    threads: int
    load_s: float
    cache: str
    e2e_ips: float
    forward_ips: float
    decode_ms: float
    model_ms: float
    p50_ms: float
    p95_ms: float
    peak_mb: float
    metric: str | None = None
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_images(folder: Path, n: int, size: tuple[int, int] = (640, 480)) -> list[str]:
    """``n`` JPEGs of ``size`` (shapes scenes with noise, quality 90): inputs when no ``data`` is given."""
    import numpy as np
    from PIL import Image

    from cnnkit.data.shapes import scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = np.asarray(
            Image.fromarray(scene(17, i, size=256).image).resize(size, Image.Resampling.BILINEAR), np.int16
        )
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"bench_{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


def images_of(task: str, data: str | os.PathLike, n: int) -> list[str]:
    """Up to ``n`` images of ``data`` as the task's val reads it (a YOLO yaml's val split, image/mask
    pairs' images, class folders), for timing on the user's own images."""
    if task == "detect" and Path(data).is_file():
        from cnnkit.data import yolo_yaml

        return [str(p) for p in yolo_yaml.split_images(yolo_yaml.read(data, require=("val",)), "val")][:n]
    if task == "segment":
        from cnnkit.data.masks import find_pairs

        return [str(image) for image, _ in find_pairs(str(data), "val")][:n]
    from cnnkit.io.sources import expand_sources

    return [it.path for it in expand_sources([str(data)], recursive=True) if it.error is None][:n]


class PeakMemory:
    """Peak resident memory (MB) while the block runs: /proc sampled every 10 ms (CUDA: the allocator's peak)."""

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.rss_mb())

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        cuda = getattr(self.device, "type", None) == "cuda"
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self._stop.clear()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self.rss_mb())
            if cuda:
                import torch

                self.peak = torch.cuda.max_memory_allocated(self.device) / 1e6


def _rate(fn: Callable[[], Any], images: int, seconds: float) -> float:
    """Images/s of ``fn`` (``images`` per call) repeated for at least ``seconds`` after one warm-up call."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * images / (time.perf_counter() - t0)


def forward_fn(predictor: Any, batch_size: int) -> Callable[[], Any]:
    """One forward pass of the predictor's network on a random full batch, as its ``predict_batch`` feeds it."""
    import torch

    if predictor.task == "detect":
        backend = predictor.backend
        side = backend.imgsz
        if hasattr(backend, "letterbox"):  # YOLO: letterboxed RGB/255
            x = backend.runtime.batch(torch.rand(batch_size, 3, side, side))
            return lambda: backend.net(x)
        images = [backend.runtime.batch(torch.rand(3, side, side)) for _ in range(batch_size)]
        return lambda: backend.net(images)
    if predictor.task == "instance":
        side = int(predictor.model.transform.min_size[-1])
        images = [predictor.runtime.batch(torch.rand(3, side, side)) for _ in range(batch_size)]
        return lambda: predictor.model(images)
    side = predictor.pre.crop if predictor.task == "classify" else -(-predictor.imgsz // 32) * 32
    x = predictor.runtime.batch(torch.randn(batch_size, 3, side, side))
    return lambda: predictor.model(x)


def latencies(predictor: Any, paths: Sequence[str], n: int) -> tuple[list[float], list[float]]:
    """Per image at batch 1, for the first ``n`` of ``paths`` that decode: decode + preprocess ms, and model
    (forward + postprocess) ms."""
    from cnnkit.engine import StreamState
    from cnnkit.io.decode import decode

    state = StreamState(batch_size=1, workers=1)
    decode_ms: list[float] = []
    model_ms: list[float] = []
    for path in paths:
        if len(decode_ms) == n:
            break
        t0 = time.perf_counter()
        try:
            decoded = decode(path, min_side=predictor.min_side)
        except CnnkitError:  # counted as failed by the end-to-end pass, which names it
            continue
        x = predictor.preprocess(decoded)
        t1 = time.perf_counter()
        predictor.predict_batch([x], [decoded], state)
        t2 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1000)
        model_ms.append((t2 - t1) * 1000)
    return decode_ms, model_ms


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, linear between ranks (numpy's default), so p50 is the median the
    decode and model figures are: nearest rank made p50 lower than the model time alone on an even count."""
    ordered = sorted(values)
    at = min(max(q / 100, 0.0), 1.0) * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def metric(task: str, predictor: Any, data: str, options: dict[str, Any]) -> float | None:
    """The task's headline score on ``data`` (classify: top-1 on class folders; segment: mIoU on image/mask
    pairs; detect: mAP50 on a YOLO dataset yaml)."""
    if task == "classify":
        from cnnkit.tasks.classify.val import evaluate_folder

        return float(evaluate_folder(predictor, data)["top1"])
    if task == "segment":
        from cnnkit.tasks.segment.val import evaluate_folder as seg_eval

        return float(seg_eval(predictor, data)["miou"])
    if task == "detect":
        from cnnkit.tasks.detect.val import validate

        return float(validate(data, compare=False, **options)["mAP50"])
    return None


def bench_one(
    model: str,
    backend: str,
    paths: Sequence[str],
    *,
    imgsz: int | None,
    batch_size: int,
    threads: int | None,
    device: str | None,
    seconds: float,
    latency_n: int,
    data: str | None,
    task: str | None = None,
    half: bool = False,
) -> Row:
    """Load ``model`` on ``backend`` and measure it (see the module docstring)."""
    import torch

    from cnnkit import api
    from cnnkit.eval.report import runtime_facts
    from cnnkit.models.loader import identify

    task = identify(model, task)[0]
    name_or_file = {"weights": model} if Path(model).is_file() else {"model": model}
    options: dict[str, Any] = {**name_or_file, "backend": backend, "device": device, "threads": threads}
    if half:
        options["half"] = True
    if imgsz is not None and task != "instance":  # Mask R-CNN resizes by its own min/max size
        options["imgsz"] = imgsz
    memory = PeakMemory()
    with memory.watch():
        t0 = time.perf_counter()
        predictor = api.load(task, **options)
        load_s = time.perf_counter() - t0
        memory.device = getattr(
            getattr(predictor, "runtime", None) or getattr(predictor, "backend", None), "device", None
        )
        loaded = getattr(predictor, "loaded", None)
        if loaded is not None:
            runtime, info = loaded.runtime, loaded.meta.get("runtime_info") or {}
        else:  # detect: the network sits behind its YOLO or torchvision backend
            net_backend = getattr(predictor, "backend", None)
            info = getattr(net_backend, "runtime_info", None) or {}
            runtime = str(info.get("backend", "torch"))
        workers = max(1, min(4, os.cpu_count() or 1))
        list(predictor.stream(list(paths[:batch_size]), batch_size=batch_size, workers=workers))  # warm-up
        t0 = time.perf_counter()
        failed = [r for r in predictor.stream(list(paths), batch_size=batch_size, workers=workers) if r.error]
        e2e = (len(paths) - len(failed)) / (time.perf_counter() - t0)
        if failed:
            log.warning(
                "benchmark: %d of %d images failed (first: %s: %s); timed on the rest",
                len(failed),
                len(paths),
                failed[0].path,
                failed[0].error,
            )
        with torch.inference_mode():
            fwd = _rate(forward_fn(predictor, batch_size), batch_size, seconds)
            dec, mod = latencies(predictor, paths, latency_n)
    if not dec:
        raise CnnkitError(f"{data or 'images'}: none of the {len(paths)} images decodes; nothing to time")
    total = [d + m for d, m in zip(dec, mod)]
    value = metric(task, predictor, data, options) if data and task in METRICS else None
    return Row(
        model=model,
        task=task,
        backend=backend,
        runtime=runtime,
        precision=runtime_facts(predictor).get("precision", "fp16" if half else "fp32"),
        imgsz=options.get("imgsz"),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        load_s=round(load_s, 2),
        cache=str(info.get("cache", "-")),
        e2e_ips=round(e2e, 2),
        forward_ips=round(fwd, 2),
        decode_ms=round(statistics.median(dec), 2),
        model_ms=round(statistics.median(mod), 2),
        p50_ms=round(percentile(total, 50), 2),
        p95_ms=round(percentile(total, 95), 2),
        peak_mb=round(memory.peak, 1),
        metric=METRICS.get(task) if value is not None else None,
        value=round(value, 4) if value is not None else None,
    )


def task_of(model: str, task: str | None) -> str:
    """The task of a registry name, checkpoint or exported file (an ``.onnx`` from ``cnnkit export`` says its
    own in its metadata)."""
    from cnnkit.export import METADATA_KEY
    from cnnkit.models.loader import identify, sniff

    kind = sniff(model)
    if task is None and kind in ("onnx", "torchscript") and Path(model).is_file():
        import json

        with contextlib.suppress(Exception):  # an unreadable file: identify asks for the task below
            if kind == "onnx":
                import onnx

                props = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
                raw = props.get(METADATA_KEY, "")
            else:  # TorchScript keeps it as an extra file, read without loading the code
                with zipfile.ZipFile(model) as zf:
                    entry = next(n for n in zf.namelist() if n.partition("/")[2] == "extra/cnnkit.json")
                    raw = zf.read(entry).decode("utf-8")
            found = json.loads(raw).get("task")
            task = found if isinstance(found, str) else None
    return identify(model, task)[0]


def run(
    models: Sequence[str],
    *,
    backends: Sequence[str] = ("torch", "auto"),
    imgsz: int | None = None,
    data: str | None = None,
    images: int = 64,
    batch_size: int = 16,
    threads: int | None = None,
    device: str | None = None,
    seconds: float = 2.0,
    latency_n: int = 16,
    task: str | None = None,
    half: bool = False,
    progress: Callable[[str], None] | None = None,
    errors: list[tuple[str, str, str]] | None = None,
) -> list[Row]:
    """Every model on every backend, in order (a model's backends one after the other, so they share the
    machine's state); images are ``data``'s own when given, else synthetic 640×480 JPEGs.

    With ``errors``, a model that cannot be timed on a backend (weights not there, a runtime that refuses it) is
    ``(model, backend, reason)`` in it and the others go on, as a batch goes on past a bad file; without, it raises.
    """
    from cnnkit.models.kinds import BACKEND_FILES, BACKENDS
    from cnnkit.models.loader import sniff

    for b in backends:
        if b not in BACKENDS:
            raise OptionError("backend", f"expected {', '.join(BACKENDS)}", b)
    if not 1 <= images <= 100_000:
        raise OptionError("images", "expected 1 to 100000 images", images)
    if data is not None and not Path(data).exists():
        raise UsageError(f"{data}: no such file or folder")
    tasks = {model: task_of(model, task) for model in models}  # every model checked before any is timed
    own = {model: images_of(tasks[model], data, images) if data else [] for model in models}  # data fits each
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as tmp:
        synthetic: list[str] = []
        for model in models:
            paths = own[model]
            if not paths:
                synthetic = synthetic or synthetic_images(Path(tmp), images)
                paths = synthetic
            exported = sniff(model) in BACKEND_FILES.values()
            if exported and set(backends) == {"torch"}:
                raise OptionError("backend", f"runs PyTorch weights; {model} is an exported file", "torch")
            for backend in backends:
                if exported and backend == "torch":  # an exported file runs on its own runtime, never eager
                    log.info("benchmark: %s is an exported file; no torch row", model)
                    continue
                if exported and BACKEND_FILES.get(backend, sniff(model)) != sniff(model):
                    if errors is None:
                        raise OptionError("backend", f"runs other files than {model}", backend)
                    errors.append((model, backend, f"backend {backend} runs other files than this one"))
                    continue
                if progress is not None:
                    progress(f"{model} on {backend}")
                try:
                    row = bench_one(
                        model,
                        backend,
                        paths,
                        imgsz=imgsz,
                        batch_size=batch_size,
                        threads=threads,
                        device=device,
                        seconds=seconds,
                        latency_n=min(latency_n, len(paths)),
                        data=data,
                        task=tasks[model],
                        half=half,
                    )
                except CnnkitError as exc:
                    # a usage error is the whole run's (half on a CPU, a bad size), but for a runtime that refuses
                    # this model: the other pairs are timed and the refusal said at the end
                    refused = isinstance(exc, OptionError) and "backend" in exc.options
                    if errors is None or (isinstance(exc, UsageError) and not refused):
                        raise
                    errors.append((model, backend, str(exc)))
                    continue
                rows.append(row)
    return rows
