"""A layer-by-layer summary: shapes, parameters, multiply-adds and receptive fields.

The model runs once, on the ``meta`` device when it can (no memory, no weights, so
VGG-16 costs nothing), under forward hooks that record each leaf layer and a torch
function mode that follows every tensor. Receptive fields use the standard
recurrence ``r_out = r_in + (k - 1)·d·j_in``, ``j_out = j_in·s`` along the main
path: where branches merge, the input with the largest feature map (then the
widest field) wins, so a residual add follows the convolutions and a squeeze-and-
excitation gate does not turn every later layer into "the whole image".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import OptionError, UsageError, reason_of
from cnnkit.models.meta_device import build_on_meta

if TYPE_CHECKING:
    import torch

    from cnnkit.models.registry import ModelSpec

log = logging.getLogger("cnnkit")

Pair = tuple[float, float]


@dataclass
class LayerRow:
    """One call of one leaf module."""

    name: str
    type: str
    kernel: list[int] | None
    stride: list[int] | None
    padding: Any
    output: list[int]
    params: int
    rf: list[float] | None  # receptive field (height, width) in input pixels
    jump: list[float] | None  # effective stride (height, width) in input pixels
    macs: int


@dataclass
class Summary:
    """A model's layer table: each layer's output shape and parameters, and the totals."""

    model: str
    input: list[int]
    layers: list[LayerRow]
    params: int
    trainable: int
    macs: int
    rf: list[float] | None
    jump: list[float] | None
    device: str = "meta"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        v = tuple(v)[-2:]
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _arg(args: tuple, kwargs: dict, names: tuple[str, ...], name: str, default: Any = None) -> Any:
    i = names.index(name)
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_TCONV = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_MAXPOOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _grow(r: Pair, j: Pair, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int] = (1, 1)) -> tuple[Pair, Pair]:
    """The recurrence, per axis: r += (k-1)·d·j, then j *= s."""
    r2 = tuple(r[a] + (k[a] - 1) * d[a] * j[a] for a in range(2))
    return r2, tuple(j[a] * s[a] for a in range(2))  # type: ignore[return-value]


def _spatial_rules() -> dict[Any, Any]:
    """torch function → rule(r, j, args, kwargs, x, out) → (r, j) for ops that change the field."""
    import torch
    import torch.nn.functional as F

    def conv(r, j, a, kw, x, out):
        w = _arg(a, kw, _CONV, "weight")
        return _grow(
            r, j, _pair(w.shape), _pair(_arg(a, kw, _CONV, "stride", 1)), _pair(_arg(a, kw, _CONV, "dilation", 1))
        )

    def tconv(r, j, a, kw, x, out):
        w = _arg(a, kw, _TCONV, "weight")
        s, d = _pair(_arg(a, kw, _TCONV, "stride", 1)), _pair(_arg(a, kw, _TCONV, "dilation", 1))
        j2 = (j[0] / s[0], j[1] / s[1])
        k = _pair(w.shape)
        return (r[0] + (k[0] - 1) * d[0] * j2[0], r[1] + (k[1] - 1) * d[1] * j2[1]), j2

    def pool(names):
        def rule(r, j, a, kw, x, out):
            k = _pair(_arg(a, kw, names, "kernel_size"))
            s = _arg(a, kw, names, "stride")
            d = _arg(a, kw, names, "dilation", 1) if "dilation" in names else 1
            return _grow(r, j, k, _pair(s) if s not in (None, [], ()) else k, _pair(d))

        return rule

    def adaptive(r, j, a, kw, x, out):
        size_in, size_out = _pair(x.shape), _pair(_first_tensor(out).shape)
        s = tuple(max(1, size_in[i] // max(1, size_out[i])) for i in range(2))
        k = tuple(max(1, math.ceil(size_in[i] / max(1, size_out[i]))) for i in range(2))
        return _grow(r, j, k, s)

    def resample(r, j, a, kw, x, out):
        size_in, size_out = _pair(x.shape), _pair(_first_tensor(out).shape)
        return r, tuple(j[i] * size_in[i] / max(1, size_out[i]) for i in range(2))

    def merged(r, j, a, kw, x, out):
        # a map whose height and width are merged (flattened for a dense layer, or into tokens that attention
        # mixes): what follows reads every position, as after a global pool
        o = _first_tensor(out)
        if x.ndim < 4 or o is None or (o.ndim >= 4 and tuple(o.shape[-2:]) == tuple(x.shape[-2:])):
            return r, j
        size = _pair(x.shape)
        return tuple(r[i] + (size[i] - 1) * j[i] for i in range(2)), j

    return {
        torch.conv2d: conv,
        torch.conv_transpose2d: tconv,
        F.max_pool2d: pool(_MAXPOOL),
        F.avg_pool2d: pool(_AVGPOOL),
        F.adaptive_avg_pool2d: adaptive,
        F.adaptive_max_pool2d: adaptive,
        F.interpolate: resample,
        F.pixel_shuffle: resample,
        F.pixel_unshuffle: resample,
        **dict.fromkeys(
            (torch.flatten, torch.reshape, torch.Tensor.flatten, torch.Tensor.reshape, torch.Tensor.view), merged
        ),
    }


def _first_tensor(obj: Any) -> Any:
    import torch
    from torch.utils._pytree import tree_flatten

    return next((t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)), None)


def _spatial_numel(t: Any) -> int:
    return math.prod(t.shape[2:]) if t.ndim >= 3 else 0


def _tracker_class() -> type:
    """Defined lazily so that importing this module does not import torch."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_flatten

    rules = _spatial_rules()

    class FieldTracker(TorchFunctionMode):
        """Tags every tensor with (receptive field, jump); keeps tagged tensors alive so ids stay unique."""

        def __init__(self) -> None:
            super().__init__()
            self.fields: dict[int, tuple[Any, Pair, Pair]] = {}

        def get(self, t: Any) -> tuple[Pair, Pair] | None:
            entry = self.fields.get(id(t))
            return (entry[1], entry[2]) if entry is not None and entry[0] is t else None

        def set(self, t: Any, r: Pair, j: Pair) -> None:
            self.fields[id(t)] = (t, r, j)

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and self.get(t)]
            if not inputs:
                return out
            main = max(inputs, key=lambda t: (_spatial_numel(t), math.prod(self.get(t)[0])))
            r, j = self.get(main)
            rule = rules.get(func)
            if rule is not None:
                r, j = rule(r, j, args, kwargs, main, out)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and (t is not main or rule is not None):
                    self.set(t, r, j)
            return out

    return FieldTracker


def _macs(module: Any, x: Any, out: Any) -> int:
    """Multiply-adds of convolutions, linear layers and attention (its projections and its two products), per
    image."""
    from torch import nn

    if out is None or x is None:
        return 0
    if isinstance(module, nn.MultiheadAttention):  # its projections are weights it multiplies, not modules it calls
        tokens = int(x.shape[1] if module.batch_first and x.ndim == 3 else x.shape[0])  # (L, E) when unbatched
        e = module.embed_dim
        return tokens * e * (e + module.kdim + module.vdim + e) + 2 * tokens * tokens * e
    batch = max(1, int(out.shape[0])) if out.ndim > 1 else 1
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return x.numel() // batch * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() // batch * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out.numel() // batch * module.in_features
    return 0


def _geometry(module: Any) -> tuple[list[int] | None, list[int] | None, Any]:
    k = getattr(module, "kernel_size", None)
    if k is None:
        return None, None, None
    s = getattr(module, "stride", None)
    p = getattr(module, "padding", None)
    k = list(_pair(k))
    s = list(_pair(s)) if s not in (None, [], ()) else k
    return k, s, (p if isinstance(p, str) else list(_pair(p)) if p is not None else None)


def _clean(v: Pair | None) -> list[float] | None:
    if v is None:
        return None
    return [int(x) if float(x).is_integer() else round(float(x), 3) for x in v]


def summarize(model: Any, input_size: tuple[int, ...], *, name: str = "", device: str = "meta") -> Summary:
    """Run ``model`` once on a tensor of ``input_size`` on ``device`` and describe every leaf layer.

    ``device="meta"`` needs the model on the meta device too (build it with
    :func:`cnnkit.models.meta_device.build_on_meta`).
    """
    import torch

    tracker = _tracker_class()()
    rows: list[LayerRow] = []
    seen: set[int] = set()

    def hook(mod_name: str):
        def record(module, inputs, output):
            x, out = _first_tensor(inputs), _first_tensor(output)
            rj = tracker.get(out) if out is not None else None
            params = 0
            if id(module) not in seen:
                seen.add(id(module))
                params = sum(p.numel() for p in module.parameters())
            k, s, p = _geometry(module)
            rows.append(
                LayerRow(
                    name=mod_name,
                    type=type(module).__name__,
                    kernel=k,
                    stride=s,
                    padding=p,
                    output=list(out.shape[1:]) if out is not None else [],
                    params=params,
                    rf=_clean(rj[0]) if rj else None,
                    jump=_clean(rj[1]) if rj else None,
                    macs=_macs(module, x, out),
                )
            )

        return record

    from torch import nn

    handles = [  # leaves, and attention, whose out_proj child it never calls
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if n and (not any(True for _ in m.children()) or isinstance(m, nn.MultiheadAttention))
    ]
    x = torch.zeros(input_size, device=device)
    tracker.set(x, (1.0, 1.0), (1.0, 1.0))
    model.eval()
    try:
        with torch.no_grad(), tracker:
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    final = tracker.get(_first_tensor(out))
    last = next((r for r in reversed(rows) if r.rf is not None), None)
    rf = _clean(final[0]) if final else (last.rf if last else None)
    jump = _clean(final[1]) if final else (last.jump if last else None)
    return Summary(
        model=name or type(model).__name__,
        input=list(input_size),
        layers=rows,
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=sum(r.macs for r in rows),
        rf=rf,
        jump=jump,
        device=str(device),
    )


@dataclass
class Target:
    """What ``summary``/``export`` were pointed at: a registry model or a checkpoint file."""

    name: str
    task: str
    builder: Any  # () -> nn.Module with random weights
    imgsz: int
    channels: int = 3
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fixed_size: int | None = None  # the only input size the architecture accepts (LeNet-5, ViT)


def resolve_target(target: str) -> Target:
    """A registry name, or a cnnkit ``.safetensors`` checkpoint (architecture from its metadata), as
    :func:`~cnnkit.models.loader.identify` tells them apart; built with random weights on demand."""
    from functools import partial

    from cnnkit.models.loader import identify, sniff

    task, spec, meta = (
        identify(target, "classify") if Path(target).is_file() and sniff(target) != "checkpoint" else identify(target)
    )
    if spec is None:
        raise UsageError(f"{target}: expected a registry model name or a cnnkit .safetensors checkpoint")
    if meta:
        build = partial(spec.builder, num_classes=len(meta["labels"]), **meta.get("arch_kwargs", {}))
        pre = meta.get("preprocess") or {}
        imgsz = int(pre.get("crop") or (spec.preprocess.crop if spec.preprocess else 224))
        return Target(
            meta.get("name") or Path(target).stem,
            task,
            build,
            imgsz,
            int(spec.meta.get("in_channels", 3)),
            target,
            meta,
            spec.meta.get("fixed_size"),
        )
    imgsz = spec.preprocess.crop if spec.preprocess else int(spec.meta.get("imgsz", 224))
    return Target(
        spec.name,
        spec.task,
        random_builder(spec),
        imgsz,
        int(spec.meta.get("in_channels", 3)),
        fixed_size=spec.meta.get("fixed_size"),
    )


def summarize_target(target: str, imgsz: int | None = None) -> Summary:
    """:func:`summarize` for a registry name or checkpoint; meta device first, CPU if the model needs real data."""

    t = resolve_target(target)
    if t.fixed_size and imgsz not in (None, t.fixed_size):
        raise OptionError("imgsz", f"{t.name} takes {t.fixed_size}x{t.fixed_size} inputs only", imgsz)
    imgsz = imgsz or t.fixed_size or t.imgsz
    size = (1, t.channels, imgsz, imgsz)
    try:
        return summarize(build_on_meta(t.builder), size, name=t.name, device="meta")
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as exc:
        log.debug("%s: meta-device pass failed (%s); running on CPU with random weights", t.name, exc)
    try:
        return summarize(t.builder(), size, name=t.name, device="cpu")
    except (RuntimeError, AssertionError) as exc:  # shape mismatches; torchvision's ViT asserts its size
        raise UsageError(
            f"{t.name}: cannot run on a {size[2]}x{size[3]} input ({reason_of(exc)}); try another `imgsz`"
        ) from exc


def random_builder(spec: ModelSpec) -> Callable[[], torch.nn.Module]:
    """A no-argument builder for ``spec``: its labels' class count, the builder's default, or 2 classes
    for builders that insist on ``num_classes`` (smp architectures registered without labels)."""
    import inspect
    from functools import partial

    if spec.labels:
        return partial(spec.builder, num_classes=len(spec.labels))
    try:
        param = inspect.signature(spec.builder).parameters.get("num_classes")
    except (TypeError, ValueError):
        param = None
    if param is not None and param.default is inspect.Parameter.empty:
        return partial(spec.builder, num_classes=2)
    return spec.builder
