"""INT8 export: post-training static quantization with ONNX Runtime, refused when it costs accuracy.

The fp32 model is exported and verified as :func:`cnnkit.export.export_model` does, then quantized
(QDQ, per-channel int8 weights, uint8 activations) with ranges calibrated on ``calibrate``'s images,
preprocessed exactly as the predictor preprocesses them. With ``val``, both files are scored on it
(classify: top-1 over class folders; segment: mIoU over image/mask pairs) and the INT8 file is only
written when it loses at most ``max_drop`` points (1 point = 0.01 of top-1 or mIoU). The file carries
cnnkit's metadata, so ``--weights model-int8.onnx`` runs it with onnxruntime or OpenVINO.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, OptionError, UsageError

log = logging.getLogger("cnnkit")
SCORES = {"classify": "top1", "segment": "miou"}
MIN_CALIBRATION = 100  # fewer images give ranges that depend on which ones were picked


@dataclass
class QuantizeResult:
    """What ``cnnkit export --int8`` wrote, and its metric against the float model when one was measured."""

    path: str
    task: str
    model: str
    calibration_images: int
    metric: str | None
    fp32: float | None
    int8: float | None
    drop_points: float | None
    max_drop: float
    size_mb: float
    fp32_size_mb: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_images(folder: str | Path, limit: int) -> list[str]:
    """Up to ``limit`` images under ``folder`` (recursive) for calibration; none is an option error."""
    from cnnkit.io.sources import expand_sources

    if not Path(folder).exists():
        raise OptionError("calibrate", "no such file or folder", str(folder))
    paths = [it.path for it in expand_sources([str(folder)], recursive=True) if it.error is None][:limit]
    if not paths:
        raise OptionError("calibrate", "no images found", str(folder))
    if len(paths) < MIN_CALIBRATION:
        log.warning(
            "%s: %d calibration images; %d or more give steadier INT8 ranges", folder, len(paths), MIN_CALIBRATION
        )
    return paths


def reader(predictor: Any, paths: list[str], input_name: str) -> Any:
    """ONNX Runtime's calibration reader: one image per call, preprocessed as the predictor does it."""
    from onnxruntime.quantization import CalibrationDataReader

    from cnnkit.errors import DecodeError
    from cnnkit.io.decode import decode

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.paths = iter(paths)

        def get_next(self) -> dict[str, Any] | None:
            for path in self.paths:
                try:
                    decoded = decode(path, min_side=predictor.min_side)
                except DecodeError as exc:  # a bad file among the calibration images: named, the next one read
                    log.warning("left out of calibration: %s: %s", path, exc)
                    continue
                break
            else:
                return None
            x = predictor.preprocess(decoded)
            x = getattr(x, "tensor", x)  # a segmenter's letterbox
            return {input_name: x[None].float().numpy()}

    return Reader()


def int8_out(target: str, name: str) -> Path:
    """Beside a checkpoint (``model-int8.onnx``); ``runs/export/NAME-int8.onnx`` for a registry model."""
    if Path(target).is_file():
        return Path(target).with_name(Path(target).stem + "-int8.onnx")
    return Path("runs") / "export" / f"{name}-int8.onnx"


def score(task: str, weights: Path, val: str) -> float:
    """Top-1 (classify) or mIoU (segment) of an ONNX file on ``val`` with onnxruntime."""
    from cnnkit import api

    predictor = api.load(task, weights=str(weights), backend="onnxruntime")
    if task == "classify":
        from cnnkit.tasks.classify.val import evaluate_folder

        return float(evaluate_folder(predictor, val)["top1"])
    from cnnkit.tasks.segment.val import evaluate_folder as seg_eval

    return float(seg_eval(predictor, val)["miou"])


def runs(task: str, int8: Path, image: str | Path, model: str) -> None:
    """Run the INT8 file on one calibration image, so that a file that does not run is never written (with no
    ``val`` nothing else runs it)."""
    from cnnkit import api

    try:
        record = next(iter(api.load(task, weights=str(int8), backend="onnxruntime").stream([str(image)])))
        error = record.error
    except CnnkitError as exc:
        error = str(exc).replace(str(int8), "the INT8 file")
    if error is not None:
        raise CnnkitError(f"{model}: the INT8 file does not run on {image} ({error[:300]}); not written")


def shape_nodes(path: Path) -> list[str]:
    """The nodes of an ONNX graph that compute on its input's shape, not on its pixels (every dynamic input of
    theirs comes from a ``Shape``): left in float. A segmenter of free input size works out its padding so, in
    float ops, and quantized those paddings became 0 (127x127 maps where 128x128 were due; DeepLabV3+'s INT8 file
    then ran on no input size at all). Quantizing only the convolutions instead halved INT8 speed on OpenVINO."""
    from cnnkit.export import _onnx

    graph = _onnx().load(str(path), load_external_data=False).graph
    constant = {t.name for t in graph.initializer}
    derived: set[str] = set()
    names = []
    for node in graph.node:  # in topological order, as ONNX requires
        dynamic = [name for name in node.input if name and name not in constant]
        if not dynamic and node.op_type != "Shape":  # Constant, or folded from constants
            constant.update(node.output)
        elif node.op_type == "Shape" or all(name in derived for name in dynamic):
            derived.update(node.output)
            names.append(node.name)
    return names


def export_int8(
    target: str,
    *,
    calibrate: str | Path,
    out: str | Path | None = None,
    val: str | None = None,
    max_drop: float = 1.0,
    imgsz: int | None = None,
    calibration_limit: int = 300,
    overwrite: bool = False,
    task: str | None = None,
) -> QuantizeResult:
    """Quantize ``target`` (a registry name or cnnkit checkpoint) to an INT8 ONNX file; see the module docstring."""
    from cnnkit import api
    from cnnkit.export import _onnx, export_model, stamp, target_task
    from cnnkit.io.files import AlreadyExists, atomic_path, check_not_input

    t0 = time.perf_counter()
    if out:
        check_not_input(out, [target, str(calibrate), *([val] if val else [])], "`out`")
    task = target_task(target, task)
    if task not in SCORES:
        raise UsageError(f"{target}: INT8 export takes classify and segment models, not {task}")
    if not 0 <= max_drop <= 100:
        raise OptionError("max_drop", "expected points from 0 to 100", max_drop)
    planned = Path(out) if out else int8_out(target, target)  # a registry model's file is named by its name
    if not overwrite and os.path.lexists(planned):  # now, not after calibrating and scoring
        raise AlreadyExists(f"{planned}: already exists (pass `exist_ok=True` to overwrite)")
    if val is None:
        log.warning("no `val` folder: the INT8 file is written without measuring its accuracy (max_drop unused)")
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise CnnkitError("onnxruntime is not installed: `pip install onnxruntime` (needed for INT8)") from exc
    paths = calibration_images(calibrate, calibration_limit)
    with tempfile.TemporaryDirectory(prefix="cnnkit-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        exported = export_model(
            target, fmt="onnx", imgsz=imgsz, dynamic_batch=True, out=fp32, overwrite=True, task=task
        )
        predictor = api.load(task, weights=str(fp32), backend="onnxruntime")
        int8 = Path(tmp) / "int8.onnx"
        logging.disable(logging.WARNING)  # the quantizer's advice on the root logger, on every call
        try:
            quantize_static(
                str(fp32),
                str(int8),
                reader(predictor, paths, "images"),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=shape_nodes(fp32),
            )
        finally:
            logging.disable(logging.NOTSET)
        meta = json.loads(next(p.value for p in _onnx().load(str(fp32)).metadata_props if p.key == "cnnkit"))
        stamp(int8, "onnx", {**meta, "precision": "int8", "calibration_images": len(paths)})
        runs(task, int8, paths[0], exported.model)
        before = after = drop = None
        if val is not None:
            before, after = score(task, fp32, val), score(task, int8, val)
            drop = round((before - after) * 100, 2)
            if drop > max_drop:
                raise CnnkitError(
                    f"{exported.model}: INT8 loses {drop} points of {SCORES[task]} on {val} "
                    f"({before:.4f} → {after:.4f}; the limit is {max_drop}); not written"
                )
        dest = Path(out) if out else int8_out(target, exported.model)
        with atomic_path(dest, overwrite=overwrite) as final:
            final.write_bytes(int8.read_bytes())
        return QuantizeResult(
            path=str(dest),
            task=task,
            model=exported.model,
            calibration_images=len(paths),
            metric=SCORES[task] if val else None,
            fp32=before,
            int8=after,
            drop_points=drop,
            max_drop=max_drop,
            size_mb=round(dest.stat().st_size / 1e6, 3),
            fp32_size_mb=round(fp32.stat().st_size / 1e6, 3),
            seconds=round(time.perf_counter() - t0, 2),
        )
