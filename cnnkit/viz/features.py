"""Feature maps and first-layer filters as PNG grids (Pillow only: no display, no font download).

Titles use ASCII ``x`` for dimensions: Pillow's built-in font has no ``×``.

Feature maps: one row per chosen layer, the most active channels side by side, every
map scaled to the same cell so that the shrinking resolution of deeper layers shows.
The default layers are the last layer at each spatial size: one per stage, from
edges to objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.errors import UsageError
from cnnkit.io.draw import _font
from cnnkit.viz.summary import LayerRow

DEFAULT_MODEL = "shapes-cnn"
MAX_DEFAULT_LAYERS = 6
# viridis at five stops (matplotlib's table), interpolated: dark = quiet, yellow = strong response
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
_DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], dtype=np.float64)  # − blue, 0 white, + red


def colormap(a: np.ndarray, stops: np.ndarray = _VIRIDIS) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB by linear interpolation between colour stops."""
    pos = np.clip(a, 0.0, 1.0) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac + 0.5).astype(np.uint8)


def stage_layers(rows: list[LayerRow], limit: int = MAX_DEFAULT_LAYERS) -> list[str]:
    """The last layer with a C×H×W output at each spatial size, in order; at most ``limit``, spread evenly."""
    picked: list[str] = []
    size: tuple[int, ...] | None = None
    for r in rows:
        if len(r.output) != 3 or r.output[1] * r.output[2] <= 1:
            continue
        hw = tuple(r.output[1:])
        if hw == size:
            picked[-1] = r.name
        else:
            picked.append(r.name)
            size = hw
    picked = list(dict.fromkeys(picked))
    if len(picked) > limit:
        idx = np.linspace(0, len(picked) - 1, limit).round().astype(int)
        picked = [picked[i] for i in sorted(set(idx.tolist()))]
    return picked


def capture(model: Any, x: Any, names: list[str]) -> dict[str, Any]:
    """Outputs of the named modules for input ``x`` (the last call wins), as CPU float tensors."""
    import torch

    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        known = [n for n in modules if n][:12]
        raise UsageError(f"--layer {missing[0]!r}: no such layer; see `cnnkit summary` (e.g. {', '.join(known)} …)")
    got: dict[str, Any] = {}

    def keep(name: str):
        def hook(module, inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(t, torch.Tensor):
                got[name] = t.detach().float().cpu().clone()
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        if n not in got or got[n].ndim != 4:
            shape = list(got[n].shape) if n in got else "nothing"
            raise UsageError(f"--layer {n}: gives {shape}, not a batch of C×H×W feature maps")
    return got


@dataclass
class Panel:
    title: str
    cells: list[np.ndarray]  # uint8 RGB, any size; each is scaled to the cell
    labels: list[str]


def feature_panel(name: str, row: LayerRow | None, fmap: Any, channels: int) -> tuple[Panel, dict[str, Any]]:
    """The ``channels`` most active maps of ``fmap`` (1×C×H×W), each min-max scaled."""
    m = fmap[0].numpy()
    order = np.argsort(-m.mean(axis=(1, 2)), kind="stable")[:channels]
    cells = []
    for c in order:
        a = m[c]
        span = a.max() - a.min()
        cells.append(colormap((a - a.min()) / span if span > 0 else np.zeros_like(a)))
    c, h, w = m.shape
    kind = row.type if row else "layer"
    rf = f" · receptive field {row.rf[0]}px" if row and row.rf else ""
    title = f"{name} ({kind}) · {c}x{h}x{w}{rf} · {len(order)} most active of {c} channels"
    info = {"layer": name, "type": kind, "shape": [c, h, w], "rf": row.rf if row else None,
            "channels": [int(i) for i in order]}
    return Panel(title, cells, [f"#{int(i)}" for i in order]), info


def filter_panel(name: str, weight: Any, limit: int = 64) -> tuple[Panel, dict[str, Any]]:
    """Kernels of a conv layer: RGB when it reads 3 channels, else its strongest input channel in blue–white–red."""
    w = weight.detach().float().cpu().numpy()
    o, i, kh, kw = w.shape
    cells = []
    for f in w[:limit]:
        scale = np.abs(f).max() or 1.0
        if i == 3:
            cells.append((np.clip(f.transpose(1, 2, 0) / (2 * scale) + 0.5, 0, 1) * 255 + 0.5).astype(np.uint8))
        else:
            k = f[int(np.argmax((f ** 2).sum(axis=(1, 2))))]
            cells.append(colormap(k / (2 * scale) + 0.5, _DIVERGING))
    how = "as RGB" if i == 3 else f"strongest of {i} input channel(s), blue negative / red positive"
    title = f"{name} · {o} filters of {i}x{kh}x{kw} · {how}" + (f" · first {limit}" if o > limit else "")
    return Panel(title, cells, [f"#{n}" for n in range(len(cells))]), {"layer": name, "shape": [o, i, kh, kw]}


def render(panels: list[Panel], *, cell: int = 96, columns: int = 8, heading: str = "") -> Any:
    """Panels stacked vertically; each one a title line and a wrapped grid of labelled cells."""
    from PIL import Image, ImageDraw

    gap, pad = 6, 10
    title_font, label_font = _font(15), _font(11)
    cols = max(1, min(columns, max(len(p.cells) for p in panels)))
    width = max(pad * 2 + cols * (cell + gap), 480)
    title_h, label_h = 24, 14
    heights = [title_h + -(-len(p.cells) // cols) * (cell + label_h + gap) for p in panels]
    top = title_h + 6 if heading else 0
    canvas = Image.new("RGB", (width, pad * 2 + top + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = pad
    if heading:
        draw.text((pad, y), heading, fill=(0, 0, 0), font=_font(17))
        y += top
    for panel, height in zip(panels, heights):
        draw.text((pad, y + 4), panel.title, fill=(20, 20, 20), font=title_font)
        for n, (img, label) in enumerate(zip(panel.cells, panel.labels)):
            r, c = divmod(n, cols)
            x0, y0 = pad + c * (cell + gap), y + title_h + r * (cell + label_h + gap)
            tile = Image.fromarray(img).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x0, y0))
            draw.text((x0, y0 + cell + 1), label, fill=(90, 90, 90), font=label_font)
        y += height
    return canvas


def first_conv(model: Any, layer: str | None = None) -> tuple[str, Any]:
    """``layer`` (a Conv2d), or the first Conv2d of the model."""
    from torch import nn

    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise UsageError("the model has no Conv2d layer")
    if layer is None:
        return convs[0]
    found = dict(convs).get(layer)
    if found is None:
        raise UsageError(f"--layer {layer!r}: not a Conv2d layer; convolutions are {', '.join(n for n, _ in convs[:10])} …")
    return layer, found


def _input_cell(x: Any, mean: Any, std: Any) -> np.ndarray:
    """The preprocessed input tensor (1×3×H×W) back to uint8 RGB: what the model sees."""
    a = x[0].numpy().transpose(1, 2, 0) * np.array(std) + np.array(mean)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def feature_figure(loaded: Any, rgb: np.ndarray, layers: list[str] | None, *, channels: int = 8,
                   cell: int = 96) -> tuple[Any, dict[str, Any]]:
    """The PNG figure for ``cnnkit features`` and what it shows (layers, shapes, channels)."""
    from cnnkit.viz.summary import summarize

    pre = loaded.preprocess
    if pre is None:
        raise UsageError(f"{loaded.name}: no preprocessing is known, so its input cannot be built")
    model = loaded.module.eval()
    x = pre(rgb)[None]
    rows = summarize(model, tuple(x.shape), name=loaded.name, device="cpu").layers
    names = layers or stage_layers(rows)
    by_name = {r.name: r for r in rows}
    maps = capture(model, x, names)
    h, w = x.shape[-2:]
    panels = [Panel(f"input · 3x{h}x{w} as the model sees it ({pre.describe().split(',')[0]})",
                    [_input_cell(x, pre.mean, pre.std)], ["input"])]
    info = []
    for n in names:
        panel, i = feature_panel(n, by_name.get(n), maps[n], channels)
        panels.append(panel)
        info.append(i)
    heading = f"{loaded.name}: feature maps, early layers (edges) to deep layers (objects)"
    return render(panels, cell=cell, columns=channels, heading=heading), {"model": loaded.name, "layers": info}


def filter_figure(loaded: Any, layer: str | None, *, cell: int = 48, limit: int = 64) -> tuple[Any, dict[str, Any]]:
    """The PNG figure for ``cnnkit filters``: the kernels of the first (or the named) conv layer."""
    name, conv = first_conv(loaded.module, layer)
    panel, info = filter_panel(name, conv.weight, limit)
    figure = render([panel], cell=cell, columns=16, heading=f"{loaded.name}: learned filters")
    return figure, {"model": loaded.name, **info}


def load_for_viewing(model: str | None, weights: str | None = None) -> Any:
    """A trained model by registry name, or from a cnnkit checkpoint given as ``model`` or ``weights``."""
    from cnnkit.models.checkpoint import read_meta
    from cnnkit.models.loader import load_model
    from cnnkit.models.registry import get_spec

    if model and model.endswith(".safetensors") and weights is None:
        model, weights = None, model
    if weights and weights.endswith(".safetensors"):
        task = read_meta(weights).get("task", "classify")
    else:
        task = get_spec(model or DEFAULT_MODEL).task
    return load_model(model, weights, task, default=DEFAULT_MODEL)


def save_figure(image: Any, out: str, *, overwrite: bool) -> str:
    """Write a PNG atomically; an existing file is kept unless ``overwrite``."""
    from cnnkit.io.files import atomic_path

    with atomic_path(out, overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG")
    return out
