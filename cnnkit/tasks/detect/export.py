"""The detect task's exporter: ultralytics' own exporter for YOLO, verified and stamped like every cnnkit export.

Found through the detect row of the task table (``Task.exporter``). It needs the detect task's
ultralytics adapter (``cnnkit.ultralytics_adapter``: offline settings, quiet logging, weights cache).
The ``.pt`` is copied to a temporary folder first, because ultralytics writes its export
beside the weights (which may be inside the installed package).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit._version import __version__
from cnnkit.errors import UsageError

if TYPE_CHECKING:
    from cnnkit.export import ExportResult
    from cnnkit.models.loader import Loaded


def _yolo(target: str) -> Loaded:
    """The ultralytics model :func:`~cnnkit.models.loader.resolve` finds for ``target``; other detectors are refused."""
    from cnnkit.models.loader import resolve
    from cnnkit.models.registry import find_spec

    named = find_spec(target, "detect")
    if named is not None and named.family != "yolo":  # said before its weights load (or download)
        raise UsageError(f"{target}: only YOLO detectors export here, not {named.source} {named.family} models")
    loaded = resolve("detect", target)
    if loaded.runtime != "ultralytics":
        spec = loaded.spec
        kind = f"{spec.source} {spec.family}" if spec else "these"
        raise UsageError(f"{target}: only YOLO detectors export here, not {kind} models")
    return loaded


def export(
    target: str, *, fmt: str, imgsz: int | None, dynamic_batch: bool, out: str | Path | None, overwrite: bool
) -> ExportResult:
    """Export a YOLO detector with ultralytics, check it against the PyTorch network, keep it or fail."""
    from cnnkit.export import default_out

    loaded = _yolo(target)
    dest = Path(out) if out else default_out(target, loaded.name, fmt)
    return export_yolo(loaded, fmt=fmt, imgsz=imgsz, dynamic_batch=dynamic_batch, out=dest, overwrite=overwrite)


def export_yolo(
    loaded: Loaded, *, fmt: str, imgsz: int | None, dynamic_batch: bool, out: Path, overwrite: bool
) -> ExportResult:
    """``loaded`` (an ultralytics detector from the resolver) exported to ``out``; what :func:`export` and the
    compiled runtimes (:mod:`cnnkit.runtimes`) share."""
    import torch

    from cnnkit import ultralytics_adapter
    from cnnkit.export import check_inputs, quiet_exporters, result, stamp, verify_file
    from cnnkit.io.files import atomic_path

    t0 = time.perf_counter()
    yolo, name = loaded.module, loaded.name
    if getattr(yolo, "task", "detect") != "detect":
        raise UsageError(f"{name}: an ultralytics {yolo.task} model, not a detector")
    net = yolo.model.float().eval()
    stride = int(max(net.stride.max().item(), 32))
    args = getattr(net, "args", None) or {}
    trained = args.get("imgsz") if isinstance(args, dict) else None
    size = int(imgsz or (trained if isinstance(trained, int) else 640))
    size = -(-size // stride) * stride
    checks = check_inputs(size, dynamic_batch, unit=True)  # YOLO takes RGB/255, letterboxed
    with torch.inference_mode():
        expected = [[net(x)[0]] for x in checks]
    meta = {
        "format_version": 1,
        "cnnkit_version": __version__,
        "task": "detect",
        "name": name,
        "arch": "yolo",
        "labels": list(loaded.labels),
        "preprocess": None,
        "letterbox": size,
        "stride": stride,
        "end2end": bool(getattr(net, "end2end", False)),
        "input": "images",
        "outputs": ["output0"],
        "input_shape": ["batch" if dynamic_batch else 1, 3, size, size],
    }
    with (
        atomic_path(out, overwrite=overwrite) as final,
        tempfile.TemporaryDirectory() as tmp,
        ultralytics_adapter.quiet(),
        quiet_exporters(),
    ):
        copy = Path(tmp) / f"{name}.pt"
        shutil.copyfile(yolo.ckpt_path, copy)
        options: dict[str, Any] = {"format": fmt, "imgsz": size, "half": False, "device": "cpu", "batch": 1}
        if fmt == "onnx":
            options.update(dynamic=dynamic_batch, simplify=False)
        written = Path(ultralytics_adapter.yolo(copy).export(**options))
        stamp(written, fmt, meta)
        diff, verified_with = verify_file(written, fmt, checks, expected)
        shutil.copyfile(written, final)
    return result(out, fmt, meta, diff, verified_with, t0)
