"""Checkpoints: safetensors weights with cnnkit's metadata inside, never arbitrary pickles.

``NAME.safetensors`` carries the tensors and, in its header, a JSON ``cnnkit`` entry
(architecture, labels, preprocessing, metrics, args). A ``NAME.json`` sidecar with
the same metadata is written for people and scripts; loading reads the header.
"""

from __future__ import annotations

import json
import os
import pickletools
from pathlib import Path
from typing import Any

from cnnkit._version import __version__
from cnnkit.errors import CnnkitError, UnsafeCheckpoint
from cnnkit.io.files import atomic_path, atomic_write_text

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
        save_file(tensors, str(tmp), metadata={"cnnkit": json.dumps(full)})
    atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2) + "\n", overwrite=True)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The cnnkit metadata of a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("cnnkit")
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if raw is None:
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            return json.loads(sidecar.read_text())
        raise CnnkitError(f"{path}: safetensors file has no cnnkit metadata (was it written by cnnkit?)")
    return json.loads(raw)


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors of a checkpoint as float32 where they are floating point.

    ``.safetensors`` is read directly; ``.pt``/``.pth`` only with ``weights_only=True``,
    so a pickle that would run code is refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CnnkitError(f"{path}: cannot read safetensors ({exc})") from exc
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if _looks_like_unsafe_pickle(path):
                raise UnsafeCheckpoint(
                    f"{path}: refused, loading it would need arbitrary unpickling ({reason[:160]}); "
                    "only safetensors and weights-only PyTorch files are loaded"
                ) from exc
            raise CnnkitError(f"{path}: cannot load weights ({reason[:200]})") from exc
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
    if not isinstance(state, dict):
        raise CnnkitError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {k: (v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v) for k, v in state.items()}


def _looks_like_unsafe_pickle(path: Path) -> bool:
    """True when a pickle stream (bare or inside a zip) asks for globals outside torch's safe set."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(name) if name else b""
        else:
            data = path.read_bytes()
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ"):
                return True
    except Exception:
        return False
    return False


# What a full-model pickle (an ultralytics .pt) may name: modules and layers, tensors and
# their storages, plain containers. Anything else (os.system, builtins.eval, subprocess…)
# is a pickle that runs code on load.
_SAFE_MODULE_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.", "ultralytics.utils", "torch.nn.parameter")
_SAFE_GLOBALS = {
    "collections": {"OrderedDict", "defaultdict"},
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state",
                     "_rebuild_qtensor", "_rebuild_sparse_tensor"},
    "torch": {"Size", "device", "float16", "float32", "bfloat16", "int64", "Tensor"},
    "_codecs": {"encode"},
    "pathlib": {"Path", "PosixPath", "WindowsPath"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy": {"ndarray", "dtype"},
    "builtins": {"set", "frozenset", "dict", "list", "tuple", "slice", "int", "float", "str", "bool", "bytes",
                 "bytearray", "complex", "range"},
}
_SAFE_GLOBALS["__builtin__"] = _SAFE_GLOBALS["builtins"]


def _pickle_bytes(path: Path) -> list[bytes]:
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Every ``module.name`` a pickle (or a torch zip checkpoint) imports when loaded."""
    found: set[str] = set()
    for data in _pickle_bytes(Path(path)):
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif op.name == "GLOBAL":
                found.add(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
            elif op.name in ("INST", "OBJ", "STACK_GLOBAL"):
                found.add("<unresolved>")
    return found


def _is_safe(qualname: str) -> bool:
    if any(qualname.startswith(p) for p in _SAFE_MODULE_PREFIXES):
        return True
    module, _, name = qualname.rpartition(".")
    if module == "torch" and name.endswith("Storage"):
        return True
    return name in _SAFE_GLOBALS.get(module, set())


def check_full_pickle(path: str | os.PathLike) -> None:
    """Refuse a full-model pickle that imports anything beyond layers, tensors and containers.

    ultralytics ``.pt`` files must be unpickled whole (``weights_only`` cannot load them), so
    they are scanned first: the scan reads opcodes and runs nothing.
    """
    path = Path(path)
    try:
        names = pickle_globals(path)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable PyTorch checkpoint ({str(exc)[:120]})") from exc
    unsafe = sorted(n for n in names if not _is_safe(n))
    if unsafe:
        raise UnsafeCheckpoint(
            f"{path}: refused, loading it would run {', '.join(unsafe[:5])}; only layers, tensors and plain "
            "containers are allowed in a full-model checkpoint"
        )
