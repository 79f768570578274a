"""Export trained models to ONNX or TorchScript, verified on the spot, and run ONNX files back.

An export is only written when the exported file reproduces PyTorch's output on the
same inputs (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) within
``|onnx − torch| ≤ ATOL + RTOL·max|torch|``; otherwise the command fails and nothing
is left behind. Labels and preprocessing travel inside the file (ONNX
``metadata_props["cnnkit"]``, TorchScript extra file ``cnnkit.json``), so
``cnnkit classify --weights model.onnx`` (or ``model.torchscript``) needs nothing else.

Tasks whose models are not one ``nn.Module`` taking an image batch (ultralytics YOLO)
provide their own exporter (``cnnkit/tasks/<task>/export.py``, found through the task table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit._version import __version__
from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of
from cnnkit.io.files import atomic_path, check_not_input
from cnnkit.models.loader import Loaded, identify, resolve, sniff
from cnnkit.models.preprocess import Preprocess

if TYPE_CHECKING:
    import torch

log = logging.getLogger("cnnkit")

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
ATOL, RTOL = 1e-4, 1e-3
OPSET = 17
METADATA_KEY = "cnnkit"
INPUT_NAME = "images"

# A task that exports its own way has ``cnnkit/tasks/<task>/export.py`` with ``export(target, *, fmt,
# imgsz, dynamic_batch, out, overwrite) -> ExportResult``; check_inputs, verify_file, stamp and result
# below are its building blocks. A task with ``free_size`` letterboxes its inputs to varying heights and
# widths (multiples of it), so its exports get dynamic H and W axes and are verified on a non-square input.


@dataclass
class ExportResult:
    """What ``cnnkit export`` wrote and how it was verified (printed as JSON)."""

    path: str
    format: str
    task: str
    model: str
    input: list[Any]
    dynamic_batch: bool
    max_abs_diff: float
    tolerance: str
    verified_with: str
    size_mb: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_task(target: str, task: str | None = None) -> str:
    """The task of a registry name or a cnnkit checkpoint; other files need ``task``."""
    return identify(target, task)[0]


def default_out(target: str, name: str, fmt: str) -> Path:
    """Beside a checkpoint file; ``runs/export/NAME`` for a registry model."""
    if Path(target).is_file():
        return Path(target).with_suffix(FORMATS[fmt])
    return Path("runs") / "export" / f"{name}{FORMATS[fmt]}"


def export_model(
    target: str,
    *,
    fmt: str = "onnx",
    imgsz: int | None = None,
    dynamic_batch: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
    task: str | None = None,
) -> ExportResult:
    """Export a registry model or checkpoint with its trained weights; see the module docstring."""
    from cnnkit.tasks import get_task

    if fmt not in FORMATS:
        raise OptionError("fmt", f"expected {' or '.join(FORMATS)}", fmt)
    if out:
        check_not_input(out, [target], "`out`")
        if Path(out).is_dir():  # "already exists", then with overwrite "Is a directory": said once, first
            raise CnnkitError(f"{out}: is a folder (an export is one file)")
        suffix = Path(out).suffix.lower()
        other = next((f for f, ext in FORMATS.items() if ext == suffix and f != fmt), None)
        if other is not None:  # a .torchscript holding ONNX would fail later, far from here
            raise UsageError(f"{out}: named as a {other} file, but the export is {fmt}; name it *{FORMATS[fmt]}")
        if suffix != FORMATS[fmt]:  # `--weights m.pt` is read as a pickle, a name without one as nothing known
            log.warning(
                "%s: cnnkit knows a %s file to load by its name, *%s; rename it so to load it back",
                out,
                fmt,
                FORMATS[fmt],
            )
    task = target_task(target, task)
    exporter = get_task(task).exporter()
    if exporter is not None:
        return exporter(
            target,
            fmt=fmt,
            imgsz=imgsz,
            dynamic_batch=dynamic_batch,
            out=out,
            overwrite=overwrite,
        )
    if Path(target).is_file() and sniff(target) != "checkpoint":
        raise UsageError(
            f"{target}: no {task} exporter takes this file; export a registry name or a cnnkit .safetensors checkpoint"
        )
    loaded = resolve(task, target)
    path = Path(out) if out else default_out(target, loaded.name, fmt)
    return export_module(loaded, task, path, fmt=fmt, imgsz=imgsz, dynamic_batch=dynamic_batch, overwrite=overwrite)


def _as_list(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return [t for t in out if isinstance(t, torch.Tensor)]


def export_module(
    loaded: Loaded,
    task: str,
    path: Path,
    *,
    fmt: str = "onnx",
    imgsz: int | None = None,
    dynamic_batch: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Trace ``loaded.module`` on a 1×3×imgsz×imgsz input, write ``path`` atomically, verify, keep or fail."""
    import torch

    t0 = time.perf_counter()
    module = loaded.module.eval().float().cpu()
    imgsz = imgsz or (loaded.preprocess.crop if loaded.preprocess else 224)
    pre = loaded.preprocess.at_size(imgsz) if loaded.preprocess else None
    from cnnkit.tasks import get_task

    multiple = get_task(task).free_size
    side = -(-imgsz // multiple) * multiple if multiple else imgsz  # the padded size the predictor feeds
    checks = check_inputs(side, dynamic_batch, wider=multiple or 0)
    example = checks[0]
    try:
        with torch.inference_mode():
            expected = [_as_list(module(x)) for x in checks]
    except RuntimeError as exc:
        raise UsageError(
            f"{loaded.name}: cannot run on a {side}x{side} input ({reason_of(exc, 160)}); try another `imgsz`"
        ) from exc
    outputs = (
        ["logits"] if len(expected[0]) == 1 and task == "classify" else [f"output{i}" for i in range(len(expected[0]))]
    )
    meta = {
        "format_version": 1,
        "cnnkit_version": __version__,
        "task": task,
        "name": loaded.name,
        "arch": loaded.spec.family if loaded.spec else loaded.meta.get("arch"),
        "labels": list(loaded.labels),
        "preprocess": pre.to_dict() if pre else None,
        "input": INPUT_NAME,
        "outputs": outputs,
        "input_shape": ["batch" if dynamic_batch else 1, 3, *(("height", "width") if multiple else (imgsz, imgsz))],
    }
    with atomic_path(path, overwrite=overwrite) as tmp, quiet_exporters():
        if fmt == "onnx":
            axes = _dynamic_axes(
                [INPUT_NAME, *outputs], [example.ndim, *(t.ndim for t in expected[0])], dynamic_batch, bool(multiple)
            )
            _write_onnx(module, example, tmp, meta, outputs, axes)
        else:
            traced = torch.jit.trace(module, example, strict=False)
            torch.jit.save(traced, str(tmp), _extra_files={"cnnkit.json": json.dumps(meta)})
        diff, verified_with = verify_file(tmp, fmt, checks, expected)
    return result(path, fmt, meta, diff, verified_with, t0)


def check_inputs(imgsz: int, dynamic_batch: bool, *, unit: bool = False, wider: int = 0) -> list[Any]:
    """Seeded inputs for verification: a batch of 1, and one of 3 when the batch is dynamic.

    Normalised-looking N(0, 1) values, or uniform [0, 1) with ``unit`` (models that take pixels/255).
    ``wider`` adds a 1×3×imgsz×(imgsz + wider) input, for exports with dynamic height and width.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    draw = torch.rand if unit else torch.randn
    checks = [draw(n, 3, imgsz, imgsz, generator=gen) for n in ((1, 3) if dynamic_batch else (1,))]
    return checks + ([draw(1, 3, imgsz, imgsz + wider, generator=gen)] if wider else [])


def result(path: Path, fmt: str, meta: dict[str, Any], diff: float, verified_with: str, t0: float) -> ExportResult:
    """The summary ``cnnkit export`` prints, for a file written and verified."""
    return ExportResult(
        path=str(path),
        format=fmt,
        task=meta["task"],
        model=meta["name"],
        input=meta["input_shape"],
        dynamic_batch=meta["input_shape"][0] == "batch",
        max_abs_diff=diff,
        tolerance=f"atol {ATOL:g} + rtol {RTOL:g}·max|torch|",
        verified_with=verified_with,
        size_mb=round(path.stat().st_size / 1e6, 3),
        seconds=round(time.perf_counter() - t0, 2),
    )


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Silence the legacy exporter's deprecation notices and tracer caveats: :func:`verify_file` is the check."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning))
        yield


def verify_file(path: Path, fmt: str, checks: list[Any], expected: list[list[Any]]) -> tuple[float, str]:
    """Run the written file on ``checks`` and compare with PyTorch's ``expected`` outputs (see :func:`check_outputs`)."""
    import torch

    if fmt == "onnx":
        return check_outputs(
            expected, [_run_onnx(str(path), x) for x in checks], path
        ), "onnxruntime " + _ort().__version__
    reloaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        got = [[t.numpy() for t in _as_list(reloaded(x))] for x in checks]
    return check_outputs(expected, got, path), "torch.jit.load " + torch.__version__


def stamp(path: Path, fmt: str, meta: dict[str, Any]) -> None:
    """Put cnnkit's metadata into a file another exporter wrote (ONNX metadata_props, TorchScript extra file)."""
    import torch

    if fmt == "onnx":
        onnx = _onnx()
        proto = onnx.load(str(path))
        kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        _add_meta(proto, meta)
        onnx.save(proto, str(path))
        return
    extra: dict[str, Any] = {}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    torch.jit.save(module, str(path), _extra_files={**extra, "cnnkit.json": json.dumps(meta)})


def _dynamic_axes(names: list[str], ranks: list[int], batch: bool, size: bool) -> dict[str, dict[int, str]] | None:
    """ONNX dynamic axes: the batch of every tensor, and height/width of the 4-D ones (the input's, then each map's own)."""

    def hw(i: int, name: str) -> dict[int, str]:
        return {2: "height", 3: "width"} if i == 0 else {2: f"{name}_height", 3: f"{name}_width"}

    axes = {
        n: {**({0: "batch"} if batch else {}), **(hw(i, n) if size and r == 4 else {})}
        for i, (n, r) in enumerate(zip(names, ranks))
    }
    return {n: a for n, a in axes.items() if a} or None


def _write_onnx(
    module: Any,
    example: Any,
    tmp: Path,
    meta: dict[str, Any],
    outputs: list[str],
    axes: dict[str, dict[int, str]] | None,
) -> None:
    import torch

    onnx = _onnx()
    try:
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    except Exception as exc:
        raise CnnkitError(f"{meta['name']}: ONNX export failed ({reason_of(exc)})") from exc
    proto = onnx.load(str(tmp))
    _add_meta(proto, meta)
    onnx.save(proto, str(tmp))


def _add_meta(proto: Any, meta: dict[str, Any]) -> None:
    onnx = _onnx()
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.doc_string = f"{meta['name']} ({meta['task']}) exported by cnnkit {__version__}"
    onnx.checker.check_model(proto)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise CnnkitError("onnx is not installed: `pip install onnx onnxruntime` (needed to write ONNX files)") from exc
    return onnx


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise CnnkitError(
            "onnxruntime is not installed: `pip install onnxruntime` (needed to verify and run ONNX files)"
        ) from exc
    return onnxruntime


def _session(path: str) -> Any:
    import torch

    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 4  # fatal only: a failure reaches the user as cnnkit's one line, not also as a log
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CnnkitError(f"{path}: onnxruntime cannot open it ({reason_of(exc)})") from exc


def _run_onnx(path: str, x: Any) -> list[Any]:
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def check_outputs(expected: list[list[Any]], got: list[list[Any]], path: Path) -> float:
    """Largest |exported − torch| over every output; raise when any is beyond the tolerance."""
    import numpy as np

    worst = 0.0
    for exp_outs, got_outs in zip(expected, got):
        if len(exp_outs) != len(got_outs):
            raise CnnkitError(
                f"{path}: the export gives {len(got_outs)} output(s), PyTorch {len(exp_outs)}; not written"
            )
        for e, g in zip(exp_outs, got_outs):
            e, g = e.numpy(), np.asarray(g)
            if e.shape != g.shape:
                raise CnnkitError(
                    f"{path}: output shape {list(g.shape)} differs from PyTorch's {list(e.shape)}; not written"
                )
            diff = float(np.abs(e - g).max()) if e.size else 0.0
            limit = ATOL + RTOL * float(np.abs(e).max() if e.size else 0.0)
            if not diff <= limit:
                raise CnnkitError(
                    f"{path}: exported output differs from PyTorch by {diff:.3g} (> {limit:.3g}); not written"
                )
            worst = max(worst, diff)
    return worst


def onnx_module(session: Any, path: str | Path) -> torch.nn.Module:
    """An ``nn.Module`` that runs an onnxruntime session, so predictors use it like a PyTorch model.

    A file exported without ``--dynamic-batch`` takes a fixed batch; larger batches are
    run in slices of that size.
    """
    import numpy as np
    import torch

    class OnnxModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.session = session
            inputs = session.get_inputs()
            _one_image_input(len(inputs), len(inputs[0].shape) if inputs else None, path)
            first = inputs[0]
            self.input_name = first.name
            self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None
            self.input_hw = tuple(first.shape[2:4]) if all(isinstance(d, int) for d in first.shape[2:4]) else None

        def forward(self, x: torch.Tensor) -> Any:
            def run(part: torch.Tensor) -> list[torch.Tensor]:
                arr = np.ascontiguousarray(part.detach().float().cpu().numpy())
                return [torch.from_numpy(o).to(x.device) for o in self.session.run(None, {self.input_name: arr})]

            return _in_slices(run, x, self.fixed_batch, path)

    return OnnxModule()


@contextlib.contextmanager
def _signal_stack_kept() -> Iterator[None]:
    """Put back the calling thread's alternate signal stack after OpenVINO compiles a model.

    OpenVINO's CPU plugin installs a signal stack of its own on the compiling thread and, when the model is
    freed, puts back the one it found. Two models freed out of order leave the thread on a stack already
    unmapped, and the next signal with a handler (Ctrl-C, the SIGTERM that stops training gracefully)
    then kills the process with SIGSEGV instead of running it. Keeping the caller's stack avoids that.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    import ctypes

    class StackT(ctypes.Structure):  # glibc's stack_t
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    libc = ctypes.CDLL(None, use_errno=True)
    saved = StackT()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    saved.ss_flags &= 2  # SS_DISABLE is kept; SS_ONSTACK only describes the moment it was read
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(saved), None)


def _openvino() -> Any:
    """``openvino``, imported without its telemetry: its import sends a usage event (and writes a client id
    under ``~/intel``) unless ``openvino_telemetry`` is missing, when it takes its own stub. cnnkit never phones
    home, so the package is hidden for that import only; a later ``import openvino_telemetry`` still works."""
    hide = "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules
    if hide:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import openvino
    except ImportError as exc:
        raise CnnkitError(
            "openvino is not installed: `pip install openvino` (needed to run the openvino backend)"
        ) from exc
    finally:
        if hide:
            del sys.modules["openvino_telemetry"]
    return openvino


def openvino_module(path: str) -> torch.nn.Module:
    """An ``nn.Module`` that runs an ONNX file compiled by OpenVINO for the CPU, with torch's thread count.

    Compiled networks are kept in OpenVINO's own cache (``<cnnkit cache>/openvino``, keyed by OpenVINO on
    the network, device and settings): a later run imports the compiled blob (0.15 s for the bundled YOLO)
    instead of compiling again (0.9 s); the blob is read into memory, not mapped, so a run survives another
    process rewriting it (Ray workers share the cache). Its ``metadata`` is the file's raw cnnkit metadata (``None`` when
    absent), read from the network OpenVINO read, so the file is parsed once."""
    import numpy as np
    import torch

    from cnnkit.runtimes import openvino_cache

    ov = _openvino()
    # f32: on CPUs with bf16 units (AVX512-BF16, AMX) OpenVINO computes in bfloat16 unless told, and the
    # bundled YOLO's boxes then differ from PyTorch's by 2 px, beyond the export tolerance
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32"}
    cache = openvino_cache()
    with contextlib.suppress(OSError):  # a read-only home: compiled every time, not refused
        cache.mkdir(parents=True, exist_ok=True)
    if os.access(cache, os.W_OK):
        config["CACHE_DIR"] = str(cache)
    try:
        with _signal_stack_kept():
            core = ov.Core()
            core.set_property({"ENABLE_MMAP": False})  # a mapped blob that another process rewrites is a SIGBUS
            # ONNX's own reader: read_model would guess, trying TensorFlow's and others' readers on a file
            # that is not ONNX (their log lines reach stderr, and a stranger's file is read by them)
            onnx = ov.frontend.FrontEndManager().load_by_framework("onnx")
            try:
                network = onnx.convert(onnx.load(str(path), False))  # False: weights read, not mapped (SIGBUS)
            except Exception as exc:  # the frontend's last line says why ("Model can't be parsed")
                said = [line.strip() for line in str(exc).splitlines() if line.strip()]
                raise CnnkitError(
                    f"{path}: OpenVINO cannot compile it (Unable to read the model as ONNX: "
                    f"{said[-1][:160] if said else type(exc).__name__})"
                ) from exc
            compiled = core.compile_model(network, "CPU", config)
            request = compiled.create_infer_request()  # one request, used under a lock (one predictor, many threads)
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"{path}: OpenVINO cannot compile it ({reason_of(exc)})") from exc
    metadata = _openvino_metadata(network, path)
    ranks = [i.get_partial_shape().rank for i in compiled.inputs]
    _one_image_input(len(ranks), ranks[0].get_length() if ranks and ranks[0].is_static else None, path)

    class OpenVinoModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.request = request
            self.lock = threading.Lock()  # a request runs one inference at a time ("Infer Request is busy")
            self.metadata = metadata
            self.outputs = len(compiled.outputs)
            dims = compiled.input(0).get_partial_shape()
            self.fixed_batch = dims[0].get_length() if dims[0].is_static else None
            hw = list(dims)[2:4]
            self.input_hw = tuple(d.get_length() for d in hw) if len(hw) == 2 and all(d.is_static for d in hw) else None

        def forward(self, x: torch.Tensor) -> Any:
            def run(part: torch.Tensor) -> list[torch.Tensor]:
                with self.lock:
                    self.request.infer({0: np.ascontiguousarray(part.detach().float().cpu().numpy())})
                    outputs = [self.request.get_output_tensor(i).data.copy() for i in range(self.outputs)]
                return [torch.from_numpy(o).to(x.device) for o in outputs]  # copies: the request reuses its buffers

            return _in_slices(run, x, self.fixed_batch, path)

    return OpenVinoModule()


def _one_image_input(count: int, rank: int | None, path: str | Path) -> None:
    """Refuse a network that does not take one batch of images (``[batch, 3, height, width]``): one with no input
    (an empty file, a constant graph) or several, or a rank that no picture has, failed later with an IndexError."""
    if count != 1:
        raise CnnkitError(
            f"{path}: its network takes {count} inputs, not one batch of images [batch, 3, height, width]"
        )
    if rank is not None and rank != 4:
        raise CnnkitError(
            f"{path}: its network takes a {rank}-D input, not a batch of images [batch, 3, height, width]"
        )


def _openvino_metadata(network: Any, path: str) -> str | None:
    """The ``cnnkit`` entry of an ONNX file's metadata as OpenVINO read it (``rt_info["framework"]``)."""
    try:
        where = ["framework", METADATA_KEY]
        return str(network.get_rt_info(where).astype(str)) if network.has_rt_info(where) else None
    except (RuntimeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{path}: its metadata is not UTF-8 text ({str(exc)[:120]})") from None


def _run_failed(path: str | Path, x: Any, exc: BaseException) -> CnnkitError:
    return CnnkitError(f"{path}: cannot run a {'x'.join(map(str, x.shape))} input ({reason_of(exc)})")


def _in_slices(run: Callable[[Any], list[Any]], x: Any, step: int | None, path: str | Path) -> Any:
    """``run`` over ``x`` in batch slices of ``step`` (a fixed-batch export), outputs concatenated back; a
    runtime's failure is a :class:`CnnkitError` naming ``path`` (the engine fails that batch's records)."""
    import torch

    step = step or len(x)

    def padded(part: Any) -> list[Any]:  # a last slice short of the fixed batch: filled with zeros, cut back
        short = step - len(part)
        if not short:
            return run(part)
        return [o[: len(part)] for o in run(torch.cat([part, part.new_zeros((short, *part.shape[1:]))]))]

    try:
        parts = [padded(x[i : i + step]) for i in range(0, len(x), step)]
    except Exception as exc:
        raise _run_failed(path, x, exc) from exc
    outs = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
    return outs[0] if len(outs) == 1 else tuple(outs)


def read_onnx_meta(path: str | Path, session: Any) -> dict[str, Any]:
    """The cnnkit metadata of an ONNX file open in an onnxruntime ``session``, checked like a checkpoint's
    (it may come from anyone)."""
    try:  # onnxruntime decodes every metadata string as UTF-8 when it builds the map
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except UnicodeDecodeError:
        raise CnnkitError(f"{path}: its metadata is not UTF-8 text") from None
    return _checked_meta(raw, path)


def _checked_meta(raw: str | None, path: str | Path) -> dict[str, Any]:
    """Raw cnnkit metadata of an exported file, parsed and checked like a checkpoint's."""
    from cnnkit.models.checkpoint import check_meta, parse_meta

    if raw is None:
        raise CnnkitError(f"{path}: no cnnkit metadata (labels, preprocessing); export it with `cnnkit export`")
    return check_meta(parse_meta(raw, path), path, required=("task",))


def torchscript_module(module: torch.jit.ScriptModule, fixed_batch: int | None, path: str | Path) -> torch.nn.Module:
    """A loaded TorchScript file as a predictor's ``nn.Module``; a fixed-batch trace runs larger batches in slices."""
    import torch

    class ScriptModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.script = module
            self.fixed_batch = fixed_batch

        def forward(self, x: torch.Tensor) -> Any:
            if not self.fixed_batch or len(x) == self.fixed_batch:
                try:
                    return self.script(x)
                except Exception as exc:
                    raise _run_failed(path, x, exc) from exc
            return _in_slices(lambda part: _as_list(self.script(part)), x, self.fixed_batch, path)

    return ScriptModule()


def _load_torchscript(path: Path) -> tuple[Any, dict[str, Any]]:
    """``torch.jit.load`` of a ``cnnkit export --to torchscript`` file, and its ``cnnkit.json``."""
    import torch

    from cnnkit.models.checkpoint import check_meta, check_torchscript, parse_meta

    if check_torchscript(path):
        _load_apart(path)
    extra = {"cnnkit.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice, on every load
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise CnnkitError(f"{path}: torch.jit.load cannot open it ({reason_of(exc)})") from exc
    if not extra["cnnkit.json"]:
        raise CnnkitError(f"{path}: no cnnkit metadata (labels, preprocessing); export it with `cnnkit export`")
    meta = check_meta(parse_meta(extra["cnnkit.json"], path), path, required=("task",))
    batch = (meta.get("input_shape") or [None])[0]
    return torchscript_module(module.eval(), batch if isinstance(batch, int) else None, path), meta


def _load_apart(path: Path) -> None:
    """``torch.jit.load`` of ``path`` in a child process, given :data:`PROBE_SECONDS`: its ``__setstate__`` runs
    inside the load, which holds the GIL (no thread of this process could time it) and may loop for ever."""
    import subprocess
    import sys

    code = "import sys, torch; torch.jit.load(sys.argv[1], map_location='cpu')"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=PROBE_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise CnnkitError(f"{path}: refused, loading it ran its code for over {PROBE_SECONDS:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise CnnkitError(f"{path}: torch.jit.load cannot open it ({last[:200]})")


def load_exported(path: str | Path, task: str, backend: str = "onnxruntime", *, probe: bool = True) -> Loaded:
    """A file from :func:`export_model`, ready for a predictor: ``Loaded.module`` runs onnxruntime or TorchScript.

    ``probe``: run one input through it and check its output fits the task and labels its metadata claims
    (a file from elsewhere); the compiled-runtime cache, which checked its own files against PyTorch, skips it.
    """
    from cnnkit.models.checkpoint import weights_file
    from cnnkit.models.kinds import BACKEND_FILES, FILE_KINDS
    from cnnkit.models.loader import sniff

    path = weights_file(path)
    if sniff(path) != BACKEND_FILES[backend]:
        suffix = next(s for s, k in FILE_KINDS.items() if k == BACKEND_FILES[backend])
        raise UsageError(f"{path}: backend {backend} runs {suffix} files (from `cnnkit export`)")
    if backend == "onnxruntime":
        session = _session(str(path))
        module, meta = onnx_module(session, path), read_onnx_meta(path, session)
    elif backend == "openvino":
        module = openvino_module(str(path))
        meta = _checked_meta(module.metadata, path)
    else:
        module, meta = _load_torchscript(path)
    if meta.get("task") != task:
        raise UsageError(f"{path}: a {meta.get('task')} model, not {task}")
    pre = Preprocess.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
    takes = getattr(module, "input_hw", None)
    if pre is not None and takes and tuple(takes) != (pre.crop, pre.crop):
        raise CnnkitError(
            f"{path}: its metadata says {pre.crop}x{pre.crop} inputs but its network takes {takes[0]}x{takes[1]}"
        )
    if probe:
        _check_outputs(module, meta, task, path)
    return Loaded(module, meta.get("name") or path.stem, list(meta.get("labels", [])), pre, None, meta)


PROBE_SECONDS = 120.0  # one input through a stranger's network at load: seconds for the largest CNN on a laptop
_probes: list[threading.Thread] = []


def bounded(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` in a daemon thread, waited for at most ``seconds`` (``TimeoutError`` after); Ctrl-C works while it
    runs. A network's code (TorchScript, an ONNX ``Loop``) may never end, and torch's interpreter would not
    see Ctrl-C: the thread is left behind, and :func:`probe_running` tells the CLI to leave without joining it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True, name="cnnkit-probe")
    _probes.append(thread)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    _probes.remove(thread)
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def probe_running() -> bool:
    """Whether a probe :func:`bounded` gave up on still runs (a process ending normally would then abort)."""
    return any(t.is_alive() for t in _probes)


def _check_outputs(module: Any, meta: dict[str, Any], task: str, path: Path) -> None:
    """Refuse at load an exported network whose output does not fit its task and labels (a classifier's file
    stamped ``segment``, 3 logits for 6 labels), which would otherwise fail every batch in postprocessing."""
    import torch

    labels = len(meta.get("labels") or [])
    if task not in ("classify", "segment", "detect"):
        raise UsageError(f"{path}: an exported {task} model; {task} runs on PyTorch only")
    shape = list(meta.get("input_shape") or [1, 3, "height", "width"])
    side = (meta.get("preprocess") or {}).get("crop") or meta.get("letterbox") or 64
    size = [int(d) if isinstance(d, int) else 1 if i == 0 else 3 if i == 1 else int(side) for i, d in enumerate(shape)]
    takes = getattr(module, "input_hw", None)  # the graph's own fixed height and width, when it has them
    if takes and len(size) == 4:
        size[2:] = [int(takes[0]), int(takes[1])]

    def run() -> Any:
        with torch.inference_mode():
            return _as_list(module(torch.full(size, 0.5)))[0]

    try:
        out = bounded(run, PROBE_SECONDS)
    except TimeoutError:
        raise CnnkitError(
            f"{path}: refused, its network did not finish one input of shape {size} in {PROBE_SECONDS:g} s"
        ) from None
    except Exception as exc:
        raise CnnkitError(f"{path}: its network fails on an input of shape {size} ({reason_of(exc)})") from exc
    got = tuple(out.shape) if hasattr(out, "shape") else ()
    if task == "classify":
        fits, wanted = len(got) == 2 and got[1] == labels, f"[batch, {labels}] logits"
    elif task == "segment":
        fits, wanted = len(got) == 4 and got[1] == labels, f"[batch, {labels}, height, width] logits"
    elif meta.get("end2end"):
        fits, wanted = len(got) == 3 and got[2] == 6, "[batch, boxes, 6] detections"
    else:
        fits, wanted = len(got) == 3 and got[1] == 4 + labels, f"[batch, {4 + labels}, anchors] (4 + {labels} labels)"
    if not fits:
        raise CnnkitError(f"{path}: its network gives {list(got)}, not the {wanted} its {task} metadata needs")
