"""Compiled CPU runtimes behind ``backend="auto"``: compile once, verify against PyTorch, cache, reuse.

On a CPU, PyTorch eager mode leaves most of the machine unused: the same network run by OpenVINO or
ONNX Runtime gives 1.6–8× the images per second (``benchmarks/README.md``). :func:`compile_loaded`
exports a resolved model to ONNX (the detect task's YOLO through ultralytics' exporter), checks the
chosen runtime's outputs against PyTorch on a probe batch with :mod:`cnnkit.export`'s tolerance, and
keeps the file in ``<cache>/runtimes/<key>/`` keyed by the weights' digest, the model's name, the input
size policy and the library versions. A later run with the same key loads the file (after checking its
sha256 against the entry, so a damaged entry is rebuilt, never trusted). A failed export or check is
remembered in the entry too: the model runs on PyTorch with one warning the first time and a debug line
afterwards, instead of paying a failing compile on every run.

``auto`` stays with PyTorch on CUDA/MPS and for Faster/Mask R-CNN (their detection heads are
data-dependent control flow that neither runtime takes as one graph).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, OptionError, reason_of

if TYPE_CHECKING:
    from cnnkit.models.loader import Loaded

log = logging.getLogger("cnnkit")

# the runtimes a model can be compiled to (besides ``torch``, eager PyTorch)
RUNTIMES = ("openvino", "onnxruntime", "torchscript")
# what ``auto`` tries on a CPU, per architecture family, then the default order. Measured with
# benchmarks/bench_runtimes.py (forward only, batch 16, 2 threads) in two runs on an idle machine, figures in
# benchmarks/README.md: ONNX Runtime leads for mobilenet_v3_large (OpenVINO/ONNX Runtime 0.93 and 0.67),
# OpenVINO for the U-Net (1.30, 1.12) and efficientnet_b0 (1.05, 1.05); resnet18 (0.98, 0.98), YOLO (1.08,
# 0.87) and the bundled CNN (1.03, 0.99) are ties, so they take the default order.
FAMILY_RUNTIME: dict[str, str] = {"mobilenet_v3_large": "onnxruntime"}
AUTO_ORDER = ("openvino", "onnxruntime")
ENTRY = "entry.json"
ENTRY_VERSION = 2  # 2: OpenVINO in f32; failures remembered under 1 (bf16 on AMX CPUs) are retried
_said: set[str] = set()  # models already reported as staying on torch (debug log once per process)


def default_backend(backend: str | None, weights: str | None = None) -> str | None:
    """What a predictor runs on when no backend is given: ``$CNNKIT_BACKEND`` / config ``backend``, else ``auto``;
    a default of ``torch`` leaves an exported file (``.onnx``, ``.torchscript``) on its own runtime (``None``)."""
    if backend is not None:
        return backend
    from cnnkit.config import lookup
    from cnnkit.models.kinds import BACKEND_FILES
    from cnnkit.models.loader import sniff

    configured = str(lookup("backend", "auto").value)
    if configured == "torch" and sniff(weights) in BACKEND_FILES.values():
        return None
    return configured


def cache_root() -> Path:
    """``<cnnkit cache>/runtimes`` (``$CNNKIT_CACHE`` or ``$XDG_CACHE_HOME/cnnkit``)."""
    from cnnkit.ultralytics_adapter import cache_dir

    return cache_dir() / "runtimes"


def openvino_cache() -> Path:
    """``<cnnkit cache>/openvino``: OpenVINO's own cache of the networks it compiled (its ``CACHE_DIR``)."""
    from cnnkit.ultralytics_adapter import cache_dir

    return cache_dir() / "openvino"


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s Python package can be imported (without importing it)."""
    needs = {
        "openvino": ("openvino", "onnx", "onnxruntime"),
        "onnxruntime": ("onnx", "onnxruntime"),
        "torchscript": ("torch",),
    }[runtime]  # ONNX files are written with onnx and checked with onnxruntime
    return all(importlib.util.find_spec(m) is not None for m in needs)


def choose(
    backend: str, device_type: str, family: str | None, *, compilable: bool, available: tuple[str, ...] | None = None
) -> str:
    """The runtime a model runs on: ``backend`` itself when forced, else ``auto``'s pick.

    Pure (availability passed in) so the rule is tested without GPUs: ``auto`` is ``torch`` on any
    device but the CPU and for models no runtime takes (``compilable`` false), else the family's
    measured runtime when installed, else the first installed of :data:`AUTO_ORDER`, else ``torch``.
    """
    if backend != "auto":
        return backend
    if device_type != "cpu" or not compilable:
        return "torch"
    available = tuple(r for r in RUNTIMES if installed(r)) if available is None else available
    preferred = FAMILY_RUNTIME.get(family or "")
    if preferred in available:
        return preferred
    return next((r for r in AUTO_ORDER if r in available), "torch")


def weights_digest(module: Any) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes): changed weights, new key."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions(runtime: str, exporter: str | None = None) -> dict[str, str]:
    """The library versions a compiled file depends on (part of the cache key): cnnkit, torch, the ONNX
    writer and checker, the runtime, and ``exporter`` (``ultralytics`` for YOLO)."""
    from importlib.metadata import PackageNotFoundError, version

    from cnnkit._version import __version__

    packages = {
        "torchscript": ("torch",),
        "onnxruntime": ("torch", "onnx", "onnxruntime"),
        "openvino": ("torch", "onnx", "onnxruntime", "openvino"),
    }[runtime]
    found = {"cnnkit": __version__}
    for pkg in (*packages, *((exporter,) if exporter else ())):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "missing"
    return found


@dataclass(frozen=True)
class CacheKey:
    """What a compiled file depends on; :meth:`digest` names its cache folder."""

    task: str
    model: str
    weights: str  # sha256 of the state dict
    size: str  # input-size policy: ``fixed:224``, ``free:32`` (any multiple of 32), ``letterbox:640``
    runtime: str
    versions: tuple[tuple[str, str], ...]
    labels: str = ""  # sha256 of the class names: a YOLO file carries them, so one renamed is another file

    def digest(self) -> str:
        parts = [self.task, self.model, self.weights, self.size, self.runtime, list(self.versions), self.labels]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "weights": self.weights,
            "size": self.size,
            "runtime": self.runtime,
            "versions": dict(self.versions),
            "labels": self.labels,
        }


def size_policy(loaded: Any, task: str, imgsz: int | None) -> tuple[str, int]:
    """The input-size policy of the compiled file and the side it is traced at."""
    from cnnkit.tasks import get_task

    if loaded.runtime == "ultralytics":
        return f"letterbox:{yolo_size(loaded, imgsz)}", yolo_size(loaded, imgsz)
    side = loaded.preprocess.crop if loaded.preprocess else 224
    multiple = get_task(task).free_size
    if multiple:
        return f"free:{multiple}", side
    return f"fixed:{side}", side


def yolo_size(loaded: Any, imgsz: int | None) -> int:
    """The letterbox side a YOLO detector runs at (as :class:`~cnnkit.tasks.detect.predict.YoloBackend` picks it)."""
    net = loaded.module.model
    stride = int(max(net.stride.max().item(), 32))
    args = getattr(net, "args", None) or {}
    trained = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    size = int(imgsz or loaded.meta.get("imgsz") or (trained if isinstance(trained, int) else 640))
    return -(-size // stride) * stride


def compilable(loaded: Any, task: str) -> bool:
    """Whether a runtime can take the model as one graph: YOLO, classifiers and segmenters (not R-CNNs)."""
    if loaded.runtime == "ultralytics":
        return getattr(loaded.module, "task", "detect") == "detect"
    return loaded.runtime == "torch" and task in ("classify", "segment")


AUTO_MAX_SIDE = 1280  # the largest input side ``auto`` compiles for (YOLO's P6 size); past it PyTorch runs


def compile_loaded(
    loaded: Loaded, task: str, backend: str, *, device: Any = None, imgsz: int | None = None, cache: Path | None = None
) -> Loaded:
    """``loaded`` run by ``backend`` (``auto``, a runtime, or ``torch``), compiled or taken from the cache.

    ``auto`` falls back to ``loaded`` (PyTorch) on a failed compile or check, with one warning line;
    a forced runtime raises instead. ``device`` is where the predictor runs (``None``: the auto device).
    """
    device_type = _device_type(device)
    can = compilable(loaded, task)
    family = loaded.spec.family if loaded.spec else loaded.meta.get("arch")
    runtime = choose(backend, device_type, family, compilable=can)
    if runtime == "torch":
        if backend == "auto" and not can and loaded.name not in _said:
            _said.add(loaded.name)
            log.debug(
                "%s: stays on PyTorch (%s)",
                loaded.name,
                "not a CPU run" if device_type != "cpu" else "no compiled runtime takes this model",
            )
        return loaded
    asked = imgsz or (loaded.preprocess.crop if loaded.preprocess is not None else None)
    if backend == "auto" and asked and asked > AUTO_MAX_SIDE:
        log.info(
            "%s: stays on PyTorch at %d px (a compile checked at that size costs more than it saves)",
            loaded.name,
            asked,
        )
        return loaded  # tracing and checking batches at 6144 px held 22 GB before the run's own memory check
    if not can:
        raise OptionError("backend", f"{loaded.name} runs on torch only (Faster/Mask R-CNN heads)", backend)
    if device_type != "cpu":
        raise OptionError("backend", f"{runtime} runs on the CPU here; use device cpu", backend)
    if not installed(runtime):
        raise OptionError("backend", f"{runtime} is not installed (pip install 'cnnkit[runtimes]')", backend)
    policy, side = size_policy(loaded, task, imgsz)
    exporter = "ultralytics" if loaded.runtime == "ultralytics" else None
    key = CacheKey(
        task,
        loaded.name,
        weights_digest(_net(loaded)),
        policy,
        runtime,
        tuple(sorted(versions(runtime, exporter).items())),
        hashlib.sha256(json.dumps(list(loaded.labels)).encode()).hexdigest()[:16],
    )
    folder = (cache or cache_root()) / key.digest()
    entry = read_entry(folder)
    if entry is not None and entry.get("status") == "failed":
        if backend != "auto":
            raise CnnkitError(
                f"{loaded.name}: {runtime} failed before ({entry.get('reason')}); delete {folder} to retry"
            )
        log.debug("%s: %s failed before (%s); running PyTorch", loaded.name, runtime, entry.get("reason"))
        return loaded
    if entry is not None:
        try:
            return _load(loaded, task, runtime, folder, entry, hit=True)
        except Exception as exc:  # a damaged or unloadable file: rebuilt below, never trusted
            log.debug("%s: cached %s entry %s unusable (%s); rebuilding", loaded.name, runtime, folder, exc)
    t0 = time.perf_counter()
    try:
        entry = build(loaded, task, runtime, folder, key, side)
        entry["compile_s"] = round(time.perf_counter() - t0, 2)
        write_entry(folder, entry)
    except Exception as exc:
        reason = reason_of(exc)
        if _passing(exc):
            where = "not remembered: the disk's failure, not the model's"
        else:
            try:  # remembered, so that later runs do not pay for it again; a cache that cannot be written is said
                entry = {"version": ENTRY_VERSION, "status": "failed", "reason": reason, "key": key.to_dict()}
                write_entry(folder, entry)
                where = f"remembered in {folder}"
            except Exception as unwritable:
                where = f"not remembered: {reason_of(unwritable)}"
        if backend != "auto":
            raise CnnkitError(f"{loaded.name}: {runtime} compile failed ({reason})") from exc
        log.warning("%s: %s compile failed (%s); running PyTorch (%s)", loaded.name, runtime, reason, where)
        return loaded
    try:
        return _load(loaded, task, runtime, folder, entry, hit=False)
    except Exception as exc:  # another process published its own build between this one's write and load
        again = read_entry(folder)
        if again is not None and again.get("status") == "ok":
            with contextlib.suppress(Exception):
                return _load(loaded, task, runtime, folder, again, hit=True)
        if backend != "auto":
            raise CnnkitError(
                f"{loaded.name}: {runtime}: the compiled file cannot be loaded ({reason_of(exc)})"
            ) from exc
        log.warning("%s: %s file cannot be loaded (%s); running PyTorch", loaded.name, runtime, reason_of(exc))
        return loaded


def _device_type(device: Any) -> str:
    if device is None:
        from cnnkit.device import resolve_device

        device = resolve_device(None)
    return device.type if hasattr(device, "type") else str(device).split(":")[0]


def _net(loaded: Any) -> Any:
    return loaded.module.model if loaded.runtime == "ultralytics" else loaded.module


def _passing(exc: BaseException) -> bool:
    """A failure of the machine, not of the model (a full disk, a folder that cannot be written): not
    remembered, so the next run compiles again."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) or any(w in str(seen) for w in ("No space left", "Read-only file system")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_entry(folder: Path) -> dict[str, Any] | None:
    """The entry of a cache folder, or ``None`` when absent or unreadable (then it is rebuilt)."""
    try:
        entry = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("version") != ENTRY_VERSION
        or entry.get("status") not in ("ok", "failed")
    ):
        return None
    return entry


def write_entry(folder: Path, entry: dict[str, Any]) -> None:
    """Writes a cache folder's entry file atomically."""
    from cnnkit.io.files import atomic_write_text

    atomic_write_text(folder / ENTRY, json.dumps(entry, indent=1))


def build(loaded: Any, task: str, runtime: str, folder: Path, key: CacheKey, side: int) -> dict[str, Any]:
    """Export ``loaded`` into ``folder``, verify it with ``runtime`` against PyTorch, and describe it."""
    fmt = "torchscript" if runtime == "torchscript" else "onnx"
    path = folder / f"model.{fmt}"
    if loaded.runtime == "ultralytics":
        from cnnkit.tasks.detect.export import export_yolo

        exported = export_yolo(loaded, fmt=fmt, imgsz=side, dynamic_batch=True, out=path, overwrite=True)
    else:
        from cnnkit.export import export_module

        exported = export_module(loaded, task, path, fmt=fmt, imgsz=side, dynamic_batch=True, overwrite=True)
    diff = exported.max_abs_diff
    if runtime == "openvino":  # the ONNX file passed onnxruntime's check; OpenVINO must pass its own
        diff = max(diff, verify_openvino(loaded, task, path, side))
    return {
        "version": ENTRY_VERSION,
        "status": "ok",
        "file": path.name,
        "sha256": file_sha256(path),
        "max_abs_diff": diff,
        "key": key.to_dict(),
    }


def verify_openvino(loaded: Any, task: str, path: Path, side: int) -> float:
    """OpenVINO's outputs on :func:`cnnkit.export.check_inputs` against PyTorch's (the export tolerance)."""
    import torch

    from cnnkit.export import _as_list, check_inputs, check_outputs
    from cnnkit.tasks import get_task

    if loaded.runtime == "ultralytics":
        net = loaded.module.model.float().eval()
        checks = check_inputs(side, True, unit=True)
        with torch.inference_mode():
            expected = [[net(x)[0]] for x in checks]
    else:
        net = loaded.module.eval().float().cpu()
        multiple = get_task(task).free_size
        checks = check_inputs(-(-side // multiple) * multiple if multiple else side, True, wider=multiple or 0)
        with torch.inference_mode():
            expected = [_as_list(net(x)) for x in checks]
    from cnnkit.export import openvino_module

    model = openvino_module(str(path))
    got = [[t.numpy() for t in _as_list(model(x))] for x in checks]
    return check_outputs(expected, got, path)


def _load(loaded: Any, task: str, runtime: str, folder: Path, entry: dict[str, Any], *, hit: bool) -> Any:
    """The compiled file of a cache entry as a :class:`~cnnkit.models.loader.Loaded` (checksum checked first)."""
    from cnnkit.export import load_exported

    path = folder / str(entry.get("file", ""))
    if path.parent != folder or not path.is_file() or file_sha256(path) != entry.get("sha256"):
        raise CnnkitError(f"{path}: missing or not the file the cache entry describes")
    info = {
        "backend": runtime,
        "cache": "hit" if hit else "built",
        "compile_s": entry.get("compile_s"),
        "path": str(path),
    }
    exported = load_exported(path, task, runtime, probe=False)  # checked against PyTorch when it was built
    if loaded.runtime == "ultralytics":  # the exported network with its letterbox/stride metadata
        exported.runtime = runtime
        exported.meta["runtime_info"] = info
        exported.meta["checkpoint"] = getattr(loaded.module, "ckpt_path", None)  # for ultralytics' val beside ours
        return exported
    return replace(loaded, module=exported.module, runtime=runtime, meta={**loaded.meta, "runtime_info": info})
