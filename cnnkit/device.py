"""The device layer: one place that decides where a model runs and in which precision.

``choose_device`` is pure (availability passed in) so its logic is tested without
GPUs; ``resolve_device`` asks torch. Nothing here writes environment variables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cnnkit.errors import OptionError, UsageError

if TYPE_CHECKING:
    import torch

_CUDA_RE = re.compile(r"^cuda(?::(\d{1,4}))?$")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|\d{1,4}|cuda(:\d{1,4})?)$")


def check_device_name(spec: str, where: str = "`device`") -> str:
    """Refuse a device that is not ``auto|cpu|cuda|cuda:N|N|mps`` before anything is loaded."""
    if not _DEVICE_RE.match(spec.strip().lower()):
        raise UsageError(f"{where}: device {spec!r} is not one of auto, cpu, cuda, cuda:N or mps")
    return spec


def choose_device(spec: str | None, *, cuda_count: int, mps_available: bool) -> str:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a concrete device string, or raise UsageError."""
    if not spec and os.environ.get("CNNKIT_DEVICE"):
        spec = check_device_name(os.environ["CNNKIT_DEVICE"], "CNNKIT_DEVICE")
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if cuda_count > 0:
            return "cuda:0"
        if mps_available:
            return "mps"
        return "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        if not mps_available:
            raise OptionError("device", "Apple MPS is not available on this machine", "mps")
        return "mps"
    if spec.isdigit():
        spec = f"cuda:{spec}"
    match = _CUDA_RE.match(spec)
    if match:
        index = int(match.group(1) or 0)
        if cuda_count == 0:
            raise OptionError("device", "no CUDA device is available (use `device` cpu)", spec)
        if index >= cuda_count:
            raise OptionError("device", f"only {cuda_count} CUDA device(s) found", spec)
        return f"cuda:{index}"
    raise OptionError("device", "expected auto, cpu, cuda, cuda:N or mps", spec)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | None = None) -> torch.device:
    """The torch.device for ``spec`` (``None`` means ``$CNNKIT_DEVICE`` or auto)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return torch.device(choose_device(spec, cuda_count=count, mps_available=_mps_available()))


def check_half(half: bool, device: torch.device | str) -> bool:
    """Half precision is a CUDA feature here; anywhere else it is a usage error."""
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    if half and kind != "cuda":
        raise OptionError("half", f"needs a CUDA device; the run uses {kind}")
    return half


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads only when the user asked for a number (tens of thousands crash torch)."""
    from cnnkit.config import MAX_THREADS

    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise OptionError("threads", f"expected a whole number from 1 to {MAX_THREADS}", threads)
    import torch

    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Runtime:
    """Where and how a predictor runs: device, precision and memory format."""

    device: Any
    half: bool = False
    channels_last: bool = True

    @classmethod
    def create(
        cls,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        channels_last: bool = True,
    ) -> Runtime:
        """The runtime for a device name (``None``: the best available), with ``half`` checked and threads set."""
        dev = resolve_device(device)
        check_half(half, dev)
        set_threads(threads)
        return cls(device=dev, half=half, channels_last=channels_last)

    @property
    def dtype(self) -> torch.dtype:
        """The input dtype the prepared model expects: float16 with ``half``, else float32."""
        import torch

        return torch.float16 if self.half else torch.float32

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device, precision and memory format, in eval mode."""
        import torch

        model = model.to(self.device).eval()
        if self.half:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def for_module(self, runtime: str) -> Runtime:
        """This runtime for a model that ``runtime`` runs: compiled runtimes take plain NCHW arrays, so
        converting batches to channels-last would only add two copies."""
        return self if runtime in ("torch", "ultralytics") else replace(self, channels_last=False)

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """An input batch moved to the device, in the model's dtype and memory format."""
        import torch

        tensor = tensor.to(self.device, dtype=self.dtype, non_blocking=True)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor


def available_devices() -> list[str]:
    """Every device torch can use here, for ``cnnkit info``."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found
