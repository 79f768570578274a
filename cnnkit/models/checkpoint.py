"""Checkpoints: safetensors weights with cnnkit's metadata inside, never arbitrary pickles.

``NAME.safetensors`` carries the tensors and, in its header, a JSON ``cnnkit`` entry
(architecture, labels, preprocessing, metrics, args). A ``NAME.json`` sidecar with
the same metadata is written for people and scripts; loading reads the header.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from cnnkit._version import __version__
from cnnkit.errors import CnnkitError, UnsafeCheckpoint, reason_of
from cnnkit.io.files import atomic_path, atomic_write_text
from cnnkit.tasks import TASK_NAMES

FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike, model: Any, meta: dict[str, Any], *, half: bool = False, overwrite: bool = True
) -> Path:
    """Write ``model``'s state dict and ``meta`` atomically; ``half`` stores floats as fp16."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    state = model.state_dict() if hasattr(model, "state_dict") else model
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.contiguous()
    full = {"format_version": FORMAT_VERSION, "cnnkit_version": __version__, **meta}
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"cnnkit": json.dumps(full)})
        except OSError:
            raise
        except Exception as exc:  # safetensors' own error type for a full disk or a folder gone
            raise CnnkitError(f"{path}: cannot write ({reason_of(exc)})") from exc
    atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2) + "\n", overwrite=True)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The cnnkit metadata of a checkpoint, without loading its tensors; checked, so loaders can trust it."""
    from safetensors import safe_open

    path = weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("cnnkit")
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable safetensors checkpoint ({reason_of(exc)})") from exc
    where = path
    if raw is None:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise CnnkitError(
                f"{path}: safetensors file has no cnnkit metadata; a plain state dict (timm, Hugging Face) "
                "loads with its architecture named as `model`"
            )
        where = sidecar
        try:
            raw = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CnnkitError(f"{sidecar}: cannot read its cnnkit metadata ({reason_of(exc)})") from exc
    return check_meta(parse_meta(raw, where), where, required=("arch", "labels"))


def has_meta(path: str | os.PathLike) -> bool:
    """Whether a safetensors file says what it holds (cnnkit metadata in its header or a sidecar); a plain
    state dict from timm or Hugging Face does not, and loads only for a named architecture."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if "cnnkit" in (f.metadata() or {}):
                return True
    except Exception:
        return True  # unreadable: read_meta says why
    return Path(path).with_suffix(".json").is_file()


def parse_meta(raw: str, where: str | os.PathLike) -> dict[str, Any]:
    """cnnkit's metadata JSON (from a checkpoint header, a sidecar or an export) as a dict, or a one-line error."""
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CnnkitError(f"{where}: its cnnkit metadata is not valid JSON ({reason_of(exc, 120)})") from exc
    if not isinstance(meta, dict):
        raise CnnkitError(f"{where}: its cnnkit metadata is not a JSON object but {type(meta).__name__}")
    return meta


MAX_LABELS = 100_000  # ImageNet-21k has 21,843 classes; more is a head that only costs memory
MAX_SIDE = 8192  # largest resize/crop/letterbox size a checkpoint may ask every image to be scaled to


def check_meta(meta: dict[str, Any], where: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``meta`` when it has the shape cnnkit writes (what loaders read from it), else a one-line error naming ``where``.

    Checkpoints and exports travel between people, so their metadata is input: a missing
    ``arch``, labels that are not a list of strings or a ``preprocess`` that is not the
    dict :class:`Preprocess` reads would otherwise surface as tracebacks deep in a loader.
    """

    def bad(reason: str) -> CnnkitError:
        return CnnkitError(f"{where}: cnnkit metadata {reason}")

    for key in required:
        if meta.get(key) is None:
            raise bad(f"has no {key!r}; was this file written by cnnkit?")
    for key in ("arch", "name", "cnnkit_version"):
        if meta.get(key) is not None and not (isinstance(meta[key], str) and meta[key]):
            raise bad(f"{key!r} is {_kind(meta[key])}, not a name")
        if meta.get(key) is not None and _has_control(meta[key]):  # it reaches log lines and records
            raise bad(f"{key!r} has control characters ({meta[key][:40]!r})")
    task = meta.get("task")
    if task is not None and task not in TASK_NAMES:
        raise bad(f"'task' is {_kind(task)}, not one of {', '.join(TASK_NAMES)}")
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise bad(f"'labels' is {_kind(labels)}, not a list of strings")
        if len(labels) > MAX_LABELS:
            raise bad(f"has {len(labels)} labels (at most {MAX_LABELS})")
        if not labels:
            raise bad("has no labels")
        odd = next((x for x in labels if _has_control(x)), None)
        if odd is not None:  # an escape sequence or a line break would reach a terminal's table raw
            raise bad(f"has a label with control characters ({odd[:40]!r})")
    pre = meta.get("preprocess")
    if pre is not None:
        _check_preprocess(pre, bad)
    if meta.get("arch_kwargs") is not None and not (
        isinstance(meta["arch_kwargs"], dict) and all(isinstance(k, str) for k in meta["arch_kwargs"])
    ):
        raise bad(f"'arch_kwargs' is {_kind(meta['arch_kwargs'])}, not an object of options")
    for key, v in (meta.get("arch_kwargs") or {}).items():  # channels and sizes: a stranger's 10**7 built ~TBs
        counts = v if isinstance(v, list) else [v]
        if any(isinstance(n, (int, float)) and not isinstance(n, bool) and not abs(n) <= MAX_SIDE for n in counts):
            raise bad(f"arch_kwargs {key!r} is {str(v)[:40]}, past {MAX_SIDE} (no layer or image side is that big)")
    for key in ("letterbox", "stride"):
        if meta.get(key) is not None and not _int_in(meta[key], 1, MAX_SIDE):
            raise bad(f"{key!r} is {_kind(meta[key])}, not a size from 1 to {MAX_SIDE}")
    if meta.get("end2end") is not None and not isinstance(meta["end2end"], bool):
        raise bad(f"'end2end' is {_kind(meta['end2end'])}, not true or false")
    shape = meta.get("input_shape")
    if shape is not None and not (
        isinstance(shape, list)
        and len(shape) == 4
        and all(x in ("batch", "height", "width") or _int_in(x, 1, 1 << 16) for x in shape)
    ):
        raise bad(f"'input_shape' is {_kind(shape)}, not [batch, channels, height, width]")
    return meta


def _check_preprocess(pre: Any, bad: Any) -> None:
    """What :meth:`Preprocess.from_dict` reads: sizes, a 3-value mean and a non-zero 3-value std."""
    import math

    if not isinstance(pre, dict):
        raise bad(f"'preprocess' is {_kind(pre)}, not an object")
    for key in ("resize", "crop"):
        if not _int_in(pre.get(key), 1, MAX_SIDE):
            raise bad(f"preprocess {key!r} is {_kind(pre.get(key))}, not a size from 1 to {MAX_SIDE}")
    for key in ("mean", "std"):
        v = pre.get(key)
        if not (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        ):
            raise bad(f"preprocess {key!r} is {_kind(v)}, not three numbers")
    if any(x == 0 for x in pre["std"]):
        raise bad("preprocess 'std' has a zero")
    if pre.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise bad(f"preprocess 'interpolation' is {_kind(pre['interpolation'])}, not {' or '.join(INTERPOLATIONS)}")


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # what Preprocess resizes with


def _has_control(text: str) -> bool:
    """Whether ``text`` holds a control character: an escape sequence or a line break would reach a
    terminal, a log line or a CSV record raw."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def weights_file(path: str | os.PathLike) -> Path:
    """``path`` when it is a file; a one-line error saying what it is otherwise."""
    path = Path(path)
    if path.is_dir():
        raise CnnkitError(f"{path}: a folder, not a weights file")
    if not path.is_file():
        # a FIFO or device would block or stream forever when read
        raise CnnkitError(f"{path}: " + ("not a regular file" if path.exists() else "weights file not found"))
    return path


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _kind(v: Any) -> str:
    """A value as an error message shows it: short, and its JSON type."""
    text = json.dumps(v) if isinstance(v, (str, int, float, bool, type(None))) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors of a checkpoint as float32 where they are floating point.

    ``.safetensors`` is read directly; ``.pt``/``.pth`` only with ``weights_only=True``,
    so a pickle that would run code is refused.
    """
    import torch

    path = weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CnnkitError(f"{path}: cannot read safetensors ({exc})") from exc
    else:
        _stored_only(path)
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols on stderr before refusing
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = reason_of(exc, 10_000)
            refused = "Weights only load failed" in str(exc)
            if refused:  # torch's own advice (weights_only=False) is the unsafe step
                lines = str(exc).splitlines()
                said = [
                    line.split("WeightsUnpickler error:")[-1] for line in lines if "WeightsUnpickler error:" in line
                ]
                told = said or [line for line in lines if "weights_only" not in line and "torch.load" not in line]
                told = [line.split(" was not an allowed global")[0].strip() for line in told if line.strip()]
                reason = told[0] if told and not told[0].startswith("Weights only") else "it holds more than tensors"
                reason = reason[:160]
            if refused and _is_ultralytics_model(path):
                raise _an_ultralytics_model(path) from None
            unsafe = _looks_like_unsafe_pickle(path)
            if refused or unsafe:
                why = (
                    "loading it would need arbitrary unpickling"
                    if unsafe
                    else "torch's weights-only reader cannot read this pickle (a bare pickle stream?)"
                )
                raise UnsafeCheckpoint(
                    f"{path}: refused, {why} ({reason[:160]}); only safetensors and weights-only PyTorch files "
                    "are loaded"
                ) from exc
            raise CnnkitError(f"{path}: cannot load weights ({reason[:200]})") from exc
        if isinstance(state, dict) and any(type(v).__module__.startswith("ultralytics.") for v in state.values()):
            raise _an_ultralytics_model(path)  # loaded: ultralytics, once imported, allows its own classes
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
    if not isinstance(state, dict):
        raise CnnkitError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {
        k: (v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v) for k, v in state.items()
    }


def _stored_only(path: Path) -> None:
    """``torch.save`` stores its zip entries as they are: a compressed one would be inflated by ``torch.load``
    before any check (a 1 MB file holding a 1 GiB tensor), so it is refused."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            packed = next((i for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED), None)
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load says what is wrong with it
    if packed is not None:
        raise CnnkitError(
            f"{path}: refused, a compressed zip entry ({packed.filename[:80]!r}), which torch.save never writes"
        )


# ultralytics model classes that are not detection models, and their task (cnnkit runs only detection ones)
ULTRALYTICS_KINDS = {
    "ClassificationModel": "classify",
    "SegmentationModel": "segment",
    "PoseModel": "pose",
    "OBBModel": "obb",
}


def _an_ultralytics_model(path: Path) -> CnnkitError:
    """The refusal of an ultralytics model file where a state dict was wanted, with where it does run, if anywhere:
    its model class is read from the pickle's names (never unpickled)."""
    try:
        names = check_full_pickle(path)
    except (CnnkitError, OSError):
        names = set()
    kind = next((k for cls, k in ULTRALYTICS_KINDS.items() if f"ultralytics.nn.tasks.{cls}" in names), None)
    if kind is not None:
        return CnnkitError(
            f"{path}: an ultralytics {kind} model file, which cnnkit does not run (it runs ultralytics detection "
            "models, with `cnnkit detect`)"
        )
    return CnnkitError(
        f"{path}: an ultralytics model file, not a state dict (cnnkit runs ultralytics detection models with "
        "`cnnkit detect`)"
    )


def _is_ultralytics_model(path: Path) -> bool:
    """Whether a pickle is a harmless ultralytics model (it passes the allow-list scan that gates ultralytics'
    own loading, and names its model classes): read by the scan, never unpickled."""
    try:
        return any(name.startswith("ultralytics.nn.") for name in check_full_pickle(path))
    except (CnnkitError, OSError):
        return False


def _looks_like_unsafe_pickle(path: Path) -> bool:
    """True when a pickle stream (bare or inside a zip) asks for globals outside torch's safe set."""

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(name) if name else b""
        else:
            data = path.read_bytes()
        for op, _arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ"):
                return True
    except Exception:
        return False
    return False


# ---------------------------------------------------------------------------------------------
# Full-model pickles (ultralytics .pt): an exact allow-list, checked by simulating the pickle machine.
#
# A prefix test on names cannot be made safe (``ultralytics.utils`` + ``os.system`` with protocol 4's
# dotted names, ``torch.nn.modules.module`` + ``torch.os.system``), nor can reading "the last two
# strings" before STACK_GLOBAL (names come from the memo). So the scan runs the pickle machine on
# symbols: a stack, marks and the memo, so every global is resolved to the exact (module, name) the
# unpickler would import, and every call (REDUCE, NEWOBJ, INST, OBJ, BUILD) is checked against what
# an ultralytics checkpoint really contains (derived from the bundled shapes-yolov8n.pt and from
# yolov8n/yolo11n/yolo26n/-seg/-cls/-pose/-obb models saved by ultralytics' save_model,
# strip_optimizer and Model.save).

TORCH_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"  # PyTorch's pre-1.6 format opens with a pickled magic number
MAX_PICKLE_BYTES = 64 << 20  # yolov8x's data.pkl is well under 1 MB
MAX_ZIP_ENTRIES = 200_000

# Modules whose nn.Module classes a checkpoint may create (NEWOBJ, then BUILD with their state):
# exact module names, never prefixes; each class is checked to be defined there and to subclass
# nn.Module.
_MODULE_CLASS_MODULES = frozenset(
    {
        *(
            f"torch.nn.modules.{m}"
            for m in (
                "activation",
                "adaptive",
                "batchnorm",
                "channelshuffle",
                "container",
                "conv",
                "distance",
                "dropout",
                "flatten",
                "fold",
                "instancenorm",
                "linear",
                "module",
                "normalization",
                "padding",
                "pixelshuffle",
                "pooling",
                "rnn",
                "sparse",
                "transformer",
                "upsampling",
            )
        ),
        *(f"ultralytics.nn.modules.{m}" for m in ("activation", "block", "conv", "head", "transformer")),
        "ultralytics.nn.tasks",
    }
)
# Names older checkpoints use that ultralytics maps to current classes while loading.
_MODULE_CLASS_ALIASES = frozenset(
    {("ultralytics.nn.modules.block", "Silence"), ("ultralytics.nn.tasks", "YOLOv10DetectionModel")}
)
# Callables the unpickler may call (REDUCE, INST, OBJ): containers, tensor rebuilding, plain values.
_CALLABLES = frozenset(
    {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("pathlib", "PosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib._local", "PosixPath"),
        ("pathlib._local", "WindowsPath"),
        ("ultralytics.utils", "IterableSimpleNamespace"),
        ("ultralytics.yolo.utils", "IterableSimpleNamespace"),
    }
)
# Classes that may be created without calling __init__ (NEWOBJ) besides the nn.Module classes.
_NEW_CLASSES = frozenset(
    {
        ("collections", "OrderedDict"),
        ("ultralytics.utils", "IterableSimpleNamespace"),
        ("ultralytics.yolo.utils", "IterableSimpleNamespace"),
    }
)
_TORCH_DTYPES = (
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
)
_STORAGES = (
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "UntypedStorage",
)
# Plain values (storage types in persistent ids, dtypes): named, never called.
_VALUES = frozenset({*(("torch", d) for d in _TORCH_DTYPES), *(("torch", s) for s in _STORAGES)})
# builtins.getattr: ultralytics pickles a fused layer's ``forward = forward_fuse`` as
# getattr(layer, "forward_fuse"); only that shape is accepted.
_GETATTR = ("builtins", "getattr")
_BOUND_METHODS = frozenset({"forward", "forward_fuse"})
# Entries torch.save writes into its zip, under one top-level folder.
_ZIP_ENTRIES = frozenset(
    {
        "data.pkl",
        ".format_version",
        ".storage_alignment",
        "byteorder",
        "version",
        ".data/version",
        ".data/serialization_id",
    }
)


class _Global(NamedTuple):
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


class _Made:
    """An object the pickle creates by calling (or instantiating) ``maker``."""

    __slots__ = ("maker",)

    def __init__(self, maker: _Global) -> None:
        self.maker = maker


class _Refused(Exception):
    """Raised inside the scan; becomes :class:`UnsafeCheckpoint` naming the file."""


_ANY = object()  # a value the scan does not need to know


def _valid_name(text: Any, dotted: bool) -> bool:
    if not isinstance(text, str) or not text.isascii():
        return False
    parts = text.split(".") if dotted else [text]
    return all(p.isidentifier() for p in parts)


@functools.cache
def _is_module_class(module: str, name: str) -> bool:
    """True when ``module.name`` is an nn.Module subclass defined in one of the exact allow-listed modules."""
    if module not in _MODULE_CLASS_MODULES or name.startswith("_"):
        return False
    import importlib

    import torch

    if module.startswith("ultralytics."):
        from cnnkit import ultralytics_adapter

        ultralytics_adapter.ultralytics()  # imported once, offline and quiet
    try:
        obj = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module


def _is_new_class(g: _Global) -> bool:
    return g in _NEW_CLASSES or g in _MODULE_CLASS_ALIASES or _is_module_class(g.module, g.name)


def _allowed(g: _Global) -> bool:
    return g in _CALLABLES or g in _VALUES or g == _GETATTR or _is_new_class(g)


class _PickleScan:
    """The pickle machine run on symbols: resolves every global and checks every call; runs nothing.

    ``strict``: refuse at the first global or call outside the allow-list. Otherwise only
    collect the globals (``pickle_globals``).
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.globals: set[str] = set()
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0

    def refuse(self, reason: str) -> None:
        if self.strict:
            raise _Refused(reason)

    def run(self, data: bytes) -> None:
        import pickletools

        try:
            for op, arg, _pos in pickletools.genops(data):
                if op.name == "STOP":
                    if len(self.stack) != 1 or self.metastack:
                        raise _Refused("malformed pickle (unbalanced stack at STOP)")
                    return
                self.step(op, arg)
        except (ValueError, IndexError, KeyError, TypeError) as exc:  # genops' and the simulation's malformed input
            raise _Refused(f"malformed pickle ({reason_of(exc, 100)})") from exc
        raise _Refused("malformed pickle (no STOP)")

    def pop(self) -> Any:
        if not self.stack:
            raise _Refused("malformed pickle (stack underflow)")
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise _Refused("malformed pickle (no MARK)")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def resolve(self, module: Any, name: Any) -> _Global:
        """The (module, name) the unpickler would import, or a refusal."""
        import _compat_pickle

        if not (_valid_name(module, dotted=True) and _valid_name(name, dotted=False)):
            shown = f"{module!s:.60}.{name!s:.60}" if isinstance(module, str) and isinstance(name, str) else "?"
            raise _Refused(f"a global that is not two plain names ({shown})")
        if self.proto < 3:  # the unpickler's fix_imports: Python 2 names of protocols 0-2
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "__builtin__":
            module = "builtins"
        g = _Global(module, name)
        self.globals.add(str(g))
        if not _allowed(g):
            self.refuse(f"loading it would import {g}")
        return g

    def call(self, func: Any, args: Any, how: str) -> _Made:
        """``func(*args)`` as REDUCE/INST/OBJ would run it."""
        if not isinstance(func, _Global):
            self.refuse(f"{how} calls something that is not an allow-listed global")
            return _Made(_Global("?", "?"))
        if func == _GETATTR:
            ok = (
                isinstance(args, tuple)
                and len(args) == 2
                and isinstance(args[0], _Made)
                and _is_new_class(args[0].maker)
                and args[1] in _BOUND_METHODS
            )
            if not ok:
                self.refuse("it calls builtins.getattr on something other than a layer's forward")
        elif func not in _CALLABLES:
            self.refuse(f"loading it would call {func}")
        return _Made(func)

    def step(self, op: Any, arg: Any) -> None:
        name = op.name
        if name in ("PROTO", "FRAME"):
            if name == "PROTO":
                self.proto = arg
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.stack.append(self.stack[-1] if self.stack else self.pop())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not self.stack or int(arg) < 0:
                raise _Refused("malformed pickle (PUT without a value)")
            self.memo[int(arg)] = self.stack[-1]
        elif name == "MEMOIZE":
            if not self.stack:
                raise _Refused("malformed pickle (MEMOIZE without a value)")
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in self.memo:
                raise _Refused(f"malformed pickle (memo {arg} read before it is written)")
            self.stack.append(self.memo[int(arg)])
        elif name in (
            "STRING",
            "BINSTRING",
            "SHORT_BINSTRING",
            "UNICODE",
            "BINUNICODE",
            "SHORT_BINUNICODE",
            "BINUNICODE8",
        ):
            self.stack.append(arg if isinstance(arg, str) else _ANY)
        elif name == "GLOBAL":
            parts = arg.split(" ") if isinstance(arg, str) else []
            if len(parts) != 2:
                raise _Refused(f"a global that is not two plain names ({str(arg)[:80]!r})")
            self.stack.append(self.resolve(*parts))
        elif name == "STACK_GLOBAL":
            gname, module = self.pop(), self.pop()
            if not (isinstance(module, str) and isinstance(gname, str)):
                raise _Refused("STACK_GLOBAL whose module and name are not two literal strings")
            self.stack.append(self.resolve(module, gname))
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise _Refused(f"{name} (a global from the copyreg extension registry)")
        elif name == "REDUCE":
            args = self.pop()
            self.stack.append(self.call(self.pop(), args, "REDUCE"))
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                self.pop()
            self.pop()
            cls = self.pop()
            if not (isinstance(cls, _Global) and _is_new_class(cls)):
                self.refuse(
                    f"{name} creates {cls if isinstance(cls, _Global) else 'an object'}, "
                    "which is not an allow-listed layer class"
                )
            self.stack.append(_Made(cls if isinstance(cls, _Global) else _Global("?", "?")))
        elif name == "INST":
            parts = arg.split(" ") if isinstance(arg, str) else []
            if len(parts) != 2:
                raise _Refused(f"a global that is not two plain names ({str(arg)[:80]!r})")
            func = self.resolve(*parts)
            args = tuple(self.pop_mark())
            self.stack.append(self.call(func, args, "INST"))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise _Refused("malformed pickle (OBJ without a class)")
            self.stack.append(self.call(items[0], tuple(items[1:]), "OBJ"))
        elif name == "BUILD":
            self.pop()
            if not self.stack or not isinstance(self.stack[-1], _Made):
                self.refuse("BUILD sets the state of something the pickle did not create")
        elif name == "EMPTY_TUPLE":
            self.stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self.pop() for _ in range(n)][::-1]
            self.stack.append(tuple(items))
        elif name == "TUPLE":
            items = self.pop_mark()  # before naming self.stack: pop_mark replaces it
            self.stack.append(tuple(items))
        elif name in ("APPEND", "SETITEM"):  # the container stays what it was (a BUILD may follow)
            for _ in range(1 if name == "APPEND" else 2):
                self.pop()
            if not self.stack:
                raise _Refused(f"malformed pickle ({name} without a container)")
        elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            self.pop_mark()
            if not self.stack:
                raise _Refused(f"malformed pickle ({name} without a container)")
        else:
            self.generic(op)

    def generic(self, op: Any) -> None:
        """Any other opcode: consume and produce what pickletools says it does."""
        import pickletools

        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_mark()
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        for _ in range(below):
            self.pop()
        self.stack.extend(_ANY for _ in op.stack_after)


def _zip_concat(zf: zipfile.ZipFile) -> int:
    """Bytes before the zip's first entry (a second zip or a pickle there), as this Python's zipfile found them.

    zipfile puts the central directory at ``start_dir``, which is its claimed offset plus those bytes. Where
    a ZIP64 end record sits is read differently across Python releases (3.12 on one GPU host differed from
    3.12.1 here), so this asks the opened archive rather than redoing that arithmetic.
    """
    if not hasattr(zipfile, "_EndRecData"):  # a future zipfile: the first-entry-at-offset-0 check remains
        return 0
    zf.fp.seek(0)  # type: ignore[union-attr]
    endrec = zipfile._EndRecData(zf.fp)
    return int(zf.start_dir - endrec[zipfile._ECD_OFFSET])  # type: ignore[attr-defined]


def _plain_zip(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The entries of a zip as torch writes one, or :class:`_Refused`: nothing before its first entry and one
    central directory (Python's zipfile and torch's miniz find directories differently, so a second one
    could show each reader other code), a bounded number of entries, no name twice."""
    if _zip_concat(zf) != 0:
        raise _Refused("a zip with other bytes before its first entry")
    infos = zf.infolist()
    if not infos or len(infos) > MAX_ZIP_ENTRIES:
        raise _Refused(f"a zip with {len(infos)} entries")
    if min(i.header_offset for i in infos) != 0:
        raise _Refused("a zip whose first entry is not at its start")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise _Refused("a zip with duplicate entries")
    return infos


def torch_zip_pickle(path: str | os.PathLike) -> bytes:
    """The ``data.pkl`` of a torch zip checkpoint, after checking the zip is only what ``torch.save`` writes.

    torch.load decides by the first bytes (a zip starts with ``PK\\x03\\x04``; anything else is
    unpickled from the start) while ``zipfile`` reads from the end, so a pickle followed by a
    zip, a zip after other bytes, a compressed or duplicated entry, or an entry torch.save never
    writes (a second ``.pkl``, TorchScript's ``code/``) is refused rather than guessed about.
    """
    import re

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != TORCH_ZIP_MAGIC:
        if head.startswith(_LEGACY_MAGIC):
            raise _Refused("PyTorch's legacy (pre-1.6) format, which ultralytics and cnnkit never write")
        if head[:1] == b"\x80":
            also = " (and a zip at its end)" if zipfile.is_zipfile(path) else ""
            raise _Refused(f"a bare pickle stream{also}, not a torch zip checkpoint")
        raise _Refused("not a torch zip checkpoint (it does not start with a zip entry)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _Refused(f"not a readable zip ({reason_of(exc, 100)})") from exc
    with zf:
        infos = _plain_zip(zf)
        names = [i.filename for i in infos]
        prefix = names[0].split("/", 1)[0]
        data = None
        for info in infos:
            top, _, rest = info.filename.partition("/")
            if top != prefix or not (rest in _ZIP_ENTRIES or re.fullmatch(r"data/[0-9]+", rest)):
                raise _Refused(f"a zip entry torch.save never writes ({info.filename[:80]!r})")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise _Refused(f"a compressed or encrypted zip entry ({info.filename[:80]!r})")
            if rest == "data.pkl":
                data = info
        if data is None:
            raise _Refused("a zip without data.pkl")
        if data.file_size > MAX_PICKLE_BYTES:
            raise _Refused(f"a {data.file_size >> 20} MB data.pkl")
        try:
            return zf.read(data)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise _Refused(f"not a readable zip ({reason_of(exc, 100)})") from exc


_TS_NAMESPACES = frozenset({"aten", "prim"})  # tensor maths and control flow; c10d, profiler, … reach further
_TS_FILE_OPS = frozenset({"save", "load", "from_file"})  # aten::save writes a file, aten::from_file maps one
MAX_TS_SOURCE = 16 << 20


MAX_TS_LOOP = 1 << 20  # more turns of a loop with a fixed count than any network's layers or boxes


def check_torchscript(path: str | os.PathLike) -> bool:
    """Refuse a TorchScript archive whose code does more than tensor maths, before ``torch.jit.load`` runs any.

    TorchScript is code: ``__setstate__`` runs inside ``torch.jit.load`` and ``forward`` on every batch, and
    both may call ``torch.save`` or ``torch.from_file`` on any path. So its ``code/`` sources, as torch's own
    zip reader reads them, are parsed (they are Python syntax): no name, attribute or string may be a file
    operator (``f = torch.save``, ``getattr(torch, "save")`` included), every operator namespace must be
    ``aten``/``prim``, no custom C++ class (``torch.classes``) is used, and no loop may run for ever (a
    ``while``, or a ``for`` over more than ``MAX_TS_LOOP`` turns: a probe at load would hang, deaf to Ctrl-C,
    inside torch's interpreter). The zip must be one torch writes
    (:func:`_plain_zip`), so Python's zipfile and torch see the same entries. A traced network (what
    ``cnnkit export`` and ultralytics write) passes; a file that fails says which use it makes.

    Returns whether its code runs inside ``torch.jit.load`` (a ``__setstate__``), where no thread can bound it:
    torch holds the GIL throughout the load.
    """
    import ast

    import torch

    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: not a TorchScript archive ({reason_of(exc, 100)})") from exc
    with zf:
        try:
            infos = _plain_zip(zf)
        except _Refused as exc:
            raise UnsafeCheckpoint(f"{path}: refused, {exc}") from None
    sources = {i.filename.partition("/")[2]: i for i in infos}
    sources = {name: i for name, i in sources.items() if name.startswith("code/") and name.endswith(".py")}
    if not sources:
        raise CnnkitError(f"{path}: not a TorchScript archive (no code/ entries)")
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        seen = {name for name in reader.get_all_records() if name.startswith("code/") and name.endswith(".py")}
    except (RuntimeError, OSError) as exc:
        raise CnnkitError(f"{path}: not a TorchScript archive ({reason_of(exc, 100)})") from exc
    if seen != set(sources):
        raise UnsafeCheckpoint(f"{path}: refused, its zip shows torch other code entries than it lists")
    runs_on_load = False
    for name, info in sources.items():
        if info.file_size > MAX_TS_SOURCE:  # one directory: the size torch's reader allocates for it too
            raise UnsafeCheckpoint(f"{path}: refused, {name[:80]} is {info.file_size >> 20} MB of code")
        try:
            tree = ast.parse(bytes(reader.get_record(name)).decode("utf-8"), name)
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError, RuntimeError) as exc:
            raise UnsafeCheckpoint(f"{path}: refused, its code cannot be read ({reason_of(exc, 100)})") from exc
        nodes = list(ast.walk(tree))
        refusals = [(n, _ts_refusal(n)) for n in nodes] + [_nested_loops(tree) or (tree, "")]
        for node, why in refusals:
            if why:
                raise UnsafeCheckpoint(
                    f"{path}: refused, its TorchScript code {why} (line {getattr(node, 'lineno', '?')} of "
                    f"{name[:80]}); only networks of tensor operations are loaded"
                )
        runs_on_load = runs_on_load or any(isinstance(n, ast.FunctionDef) and n.name == "__setstate__" for n in nodes)
    return runs_on_load


def _nested_loops(tree: Any) -> tuple[Any, str] | None:
    """A loop whose fixed count, times those of the loops around it, passes ``MAX_TS_LOOP`` (each may be under it
    alone; ``__setstate__`` runs inside ``torch.jit.load``, where no probe's time limit reaches), and why."""
    import ast

    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, outer = stack.pop()
        for child in ast.iter_child_nodes(node):
            turns = outer
            if isinstance(child, ast.For):
                args = child.iter.args if isinstance(child.iter, ast.Call) else []
                counts = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, int)]
                turns = outer * max([1, *counts])
                if turns > MAX_TS_LOOP:
                    return child, f"nests loops of {turns:,} turns in all"
            stack.append((child, turns))
    return None


def _ts_refusal(node: Any) -> str:
    """Why one node of TorchScript source is refused (empty: allowed). A file operator is refused wherever it
    is named, not only where it is called: TorchScript takes ``f = torch.save; f(…)`` and ``getattr(torch,
    "save")``."""
    import ast

    if isinstance(node, ast.While):  # a traced network has none; run at load and on every batch, one may never end
        return "has a while loop, which may never end"
    if (
        isinstance(node, ast.For)
        and isinstance(node.iter, ast.Call)
        and any(
            isinstance(a, ast.Constant) and isinstance(a.value, int) and a.value > MAX_TS_LOOP for a in node.iter.args
        )
    ):
        return f"loops {ast.unparse(node.iter)[:60]} times"
    if isinstance(node, ast.Call):  # seen before the name it calls (ast.walk goes down)
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in _TS_FILE_OPS:
            return f"calls {ast.unparse(func)[:60]}, which reads or writes files"
        if isinstance(func, ast.Name) and name == "print":  # prim::Print writes to stdout, among the records
            return "prints to stdout, where the records go"
    named = (
        node.attr
        if isinstance(node, ast.Attribute)
        else node.id
        if isinstance(node, ast.Name)
        else node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        else None
    )
    if named in _TS_FILE_OPS:
        return f"names {ast.unparse(node)[:60]}, which reads or writes files"
    if isinstance(node, ast.Attribute):
        dotted: list[str] = []
        inner: Any = node
        while isinstance(inner, ast.Attribute):
            dotted.insert(0, inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name):
            dotted.insert(0, inner.id)
            if dotted[0] == "torch" and len(dotted) > 1 and dotted[1] == "ops":
                dotted = dotted[1:]
            if dotted[0] == "ops" and len(dotted) > 1 and dotted[1] not in _TS_NAMESPACES:
                return f"calls {'.'.join(dotted)[:60]} (operators of {dotted[1]!r})"
            if "classes" in dotted[:3] and "torch" in dotted[:2]:
                return f"uses the custom class {'.'.join(dotted)[:60]}"
    return ""


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Every ``module.name`` a pickle (or a torch zip checkpoint) imports when loaded, allowed or not.

    A file whose names cannot be resolved (or a zip torch.save would not write) raises
    :class:`UnsafeCheckpoint`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        torch_zip = f.read(4) == TORCH_ZIP_MAGIC
    scan = _PickleScan(strict=False)
    try:
        scan.run(torch_zip_pickle(path) if torch_zip else path.read_bytes())
    except _Refused as exc:
        raise UnsafeCheckpoint(f"{path}: {exc}") from None
    return scan.globals


def check_full_pickle(path: str | os.PathLike) -> set[str]:
    """Refuse a full-model checkpoint that could do more when unpickled than rebuild layers and tensors;
    returns the (allowed) globals it names.

    This is the gate before ultralytics unpickles a ``.pt``: the file must be a torch zip
    (see :func:`torch_zip_pickle`) whose ``data.pkl`` names only allow-listed globals and calls
    only allow-listed callables (see :class:`_PickleScan`); it reads opcodes and runs nothing.
    """
    path = weights_file(path)
    scan = _PickleScan()
    try:
        scan.run(torch_zip_pickle(path))
        return scan.globals
    except _Refused as exc:
        raise UnsafeCheckpoint(
            f"{path}: refused, {exc}; a full-model checkpoint may hold only layers, tensors and plain values"
        ) from None
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot read it ({reason_of(exc)})") from exc


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A ``last.pt`` written by cnnkit's own training loops, loaded weights-only; a one-line error otherwise.

    cnnkit writes these with ``torch.save`` (a torch zip), so anything else (a bare pickle, the
    legacy format, a zip with extra entries) is refused before torch reads it.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        torch_zip_pickle(path)
    except _Refused as exc:
        raise UnsafeCheckpoint(f"{path}: refused, {exc}; resume reads only the last.pt cnnkit wrote") from None
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot read it ({reason_of(exc)})") from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = reason_of(exc, 160)
        raise UnsafeCheckpoint(f"{path}: refused, loading it would need more than weights ({reason})") from exc
    except Exception as exc:
        raise CnnkitError(f"{path}: not a cnnkit training checkpoint ({reason_of(exc)})") from exc
    if not isinstance(state, dict):
        raise CnnkitError(f"{path}: not a cnnkit training checkpoint (it holds {type(state).__name__}, not a dict)")
    return state


@contextlib.contextmanager
def restoring(path: str | os.PathLike) -> Iterator[None]:
    """Around restoring a run from ``path``: a missing key or a shape mismatch becomes a one-line error naming it."""
    try:
        yield
    except CnnkitError:
        raise
    except Exception as exc:  # KeyError, RuntimeError (shapes), ValueError, TypeError from a foreign last.pt
        what = f"missing {exc}" if isinstance(exc, KeyError) else reason_of(exc)
        raise CnnkitError(f"{path}: cannot resume from it ({what})") from exc
