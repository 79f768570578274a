"""Build models on PyTorch's ``meta`` device: shapes and parameter counts without memory or initialisation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters and buffers registered inside go to the meta device (accelerate's ``init_empty_weights``)."""
    from torch import nn

    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: Any, name: str, param: Any) -> None:
        register_parameter(module, name, param)
        if param is not None and param.device.type != "meta":
            kwargs = {**module._parameters[name].__dict__, "requires_grad": param.requires_grad}
            module._parameters[name] = type(param)(param.to("meta"), **kwargs)

    def buffer(module: Any, name: str, tensor: Any, persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if tensor is not None:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def build_on_meta(builder: Callable[[], nn.Module]) -> nn.Module:
    """``builder()`` with its parameters and buffers on the meta device: no memory, no initialisation.

    Not ``with torch.device("meta")``: that also puts on meta every tensor made while the builder
    first imports its library (ultralytics' module-level constants), which breaks that library
    for the rest of the process. Not thread-safe: ``nn.Module`` is patched while the builder runs.
    """
    try:
        with _parameters_on_meta():
            return builder()
    except (RuntimeError, NotImplementedError):
        # A constructor that runs its own network (ultralytics measures strides) needs its input on
        # the same device: build it all under the meta device, now that its library is imported.
        import torch

        with torch.device("meta"):
            return builder()
