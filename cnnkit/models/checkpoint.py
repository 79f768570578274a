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
