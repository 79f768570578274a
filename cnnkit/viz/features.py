"""Feature maps and first-layer filters as PNG grids (Pillow only: no display, no font download).

Titles use ASCII ``x`` for dimensions: Pillow's built-in font has no ``×``.

Feature maps: one row per chosen layer, the most active channels side by side, every
map scaled to the same cell so that the shrinking resolution of deeper layers shows.
The default layers are the last layer at each spatial size: one per stage, from
edges to objects. The first row is the input as the network receives it, made the way
the model's own task makes it (centre crop, YOLO or segmentation letterbox, R-CNN resize),
so that what the maps respond to, padding included, is in the picture.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.errors import CnnkitError, OptionError, UsageError
from cnnkit.io.draw import _font
from cnnkit.models.loader import Loaded
from cnnkit.viz.summary import LayerRow

if TYPE_CHECKING:
    import PIL.Image

DEFAULT_MODEL = "shapes-cnn"
MAX_DEFAULT_LAYERS = 6
MAX_WIDTH = 2400  # a figure widens for a long unbroken word up to this; a longer word is broken
# viridis at five stops (matplotlib's table), interpolated: dark = quiet, yellow = strong response
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
_DIVERGING = np.array([[33, 102, 172], [247, 247, 247], [178, 24, 43]], dtype=np.float64)  # − blue, 0 white, + red


def colormap(a: np.ndarray, stops: np.ndarray = _VIRIDIS) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB by linear interpolation between colour stops."""
    pos = np.clip(a, 0.0, 1.0) * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac + 0.5).astype(np.uint8)


def _last_per_size(named: list[tuple[str, tuple[int, ...]]], limit: int) -> list[str]:
    """Of (name, C×H×W) in order: the last name at each spatial size; at most ``limit``, spread evenly."""
    picked: list[str] = []
    size: tuple[int, ...] | None = None
    for name, shape in named:
        if len(shape) != 3 or shape[1] * shape[2] <= 1:
            continue
        hw = tuple(shape[1:])
        if hw == size:
            picked[-1] = name
        else:
            picked.append(name)
            size = hw
    picked = list(dict.fromkeys(picked))
    if len(picked) > limit:
        idx = np.linspace(0, len(picked) - 1, limit).round().astype(int)
        picked = [picked[i] for i in sorted(set(idx.tolist()))]
    return picked


def stage_layers(rows: list[LayerRow], limit: int = MAX_DEFAULT_LAYERS) -> list[str]:
    """The last layer with a C×H×W output at each spatial size, in order; at most ``limit``, spread evenly.

    A module called more than once counts only at its last call, the one :func:`capture` keeps.
    """
    last = {r.name: i for i, r in enumerate(rows)}
    return _last_per_size([(r.name, tuple(r.output)) for i, r in enumerate(rows) if last[r.name] == i], limit)


def default_layers(loaded: Any, rows: list[LayerRow], x: Any) -> list[str]:
    """One layer per stage of the part of the network that goes from edges to objects.

    YOLO: the blocks of its backbone (``model.0`` … the SPPF), as ultralytics' activation module is
    shared by every block and cannot be hooked alone. R-CNN: its ResNet body. Others: the whole network.
    """
    kind = getattr(loaded, "kind", "crop")
    if kind == "yolo":
        net = loaded.module
        arch = getattr(net, "yaml", None)
        n = (
            len(arch["backbone"])
            if isinstance(arch, dict) and isinstance(arch.get("backbone"), list)
            else len(net.model)
        )
        blocks = [f"model.{i}" for i in range(n)]
        maps = capture(net, x, blocks, strict=False)
        return _last_per_size([(b, tuple(maps[b].shape[1:])) for b in blocks if b in maps], MAX_DEFAULT_LAYERS)
    if kind == "rcnn":
        rows = [r for r in rows if r.name.startswith("backbone.body.")] or rows
    return stage_layers(rows)


def block_row(name: str, module: Any, rows: list[LayerRow]) -> LayerRow | None:
    """A row for a module that is not a leaf (``model.4``, ``layer2``): its type, and the receptive field
    of the last layer inside it that runs once."""
    inside = [r for r in rows if r.name.startswith(name + ".")]
    if not inside:
        return None
    once = [r for r in inside if r.rf and sum(q.name == r.name for q in rows) == 1]
    return LayerRow(
        name,
        type(module).__name__,
        None,
        None,
        None,
        inside[-1].output,
        0,
        once[-1].rf if once else None,
        once[-1].jump if once else None,
        0,
    )


def capture(model: Any, x: Any, names: list[str], *, strict: bool = True) -> dict[str, Any]:
    """Outputs of the named modules for input ``x`` (the last call wins), as CPU float tensors.

    A module that runs more than once at different sizes (an activation shared by a whole network,
    as in ultralytics' YOLO) has no one map and is refused, as is one whose output is not 1×C×H×W;
    without ``strict`` such names are left out instead.
    """
    import torch

    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        known = [n for n in modules if n][:12]
        raise OptionError("layer", f"no such layer; see `cnnkit summary` (e.g. {', '.join(known)} …)", missing[0])
    got: dict[str, Any] = {}
    sizes: dict[str, set[tuple[int, ...]]] = {n: set() for n in names}

    def keep(name: str):
        def hook(module, inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(t, torch.Tensor):
                got[name] = t.detach().float().cpu().clone()
                sizes[name].add(tuple(t.shape))

        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        problem = None
        if len(sizes[n]) > 1:
            around = n.rsplit(".", 1)[0] if "." in n else "another layer"
            problem = (
                f"`layer` {n}: a shared module that runs at {len(sizes[n])} different sizes; "
                f"choose the block around it ({around})"
            )
        elif n not in got or got[n].ndim != 4 or got[n].shape[0] != len(x):
            shape = list(got[n].shape) if n in got else "nothing"
            per_region = n in got and got[n].ndim == 4  # an R-CNN head: one map per region, none of the image
            problem = f"`layer` {n}: gives {shape}" + (
                " (one map per region), not the image's C×H×W feature maps"
                if per_region
                else ", not a batch of C×H×W feature maps"
            )
        if problem and strict:
            raise UsageError(problem)
        if problem:
            got.pop(n, None)
    return got


@dataclass
class Panel:
    """One block of a feature figure: a title and labelled cells."""

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
    info = {
        "layer": name,
        "type": kind,
        "shape": [c, h, w],
        "rf": row.rf if row else None,
        "channels": [int(i) for i in order],
    }
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
            k = f[int(np.argmax((f**2).sum(axis=(1, 2))))]
            cells.append(colormap(k / (2 * scale) + 0.5, _DIVERGING))
    how = "as RGB" if i == 3 else f"strongest of {i} input channel(s), blue negative / red positive"
    title = f"{name} · {o} filters of {i}x{kh}x{kw} · {how}" + (f" · first {limit}" if o > limit else "")
    return Panel(title, cells, [f"#{n}" for n in range(len(cells))]), {"layer": name, "shape": [o, i, kh, kw]}


def _join_separators(words: list[str]) -> list[str]:
    """``["a", "·", "b"]`` → ``["a ·", "b"]``: a wrapped line may end with a separator, never start with one."""
    out: list[str] = []
    for w in words:
        if out and w in ("·", "-", "–", ":"):
            out[-1] += f" {w}"
        else:
            out.append(w)
    return out


def _cut(word: str, font: Any, width: float, measure: Any) -> int:
    """How many characters of ``word`` fit in ``width`` (at least one), ending after ``.``/``_``/``-`` when that
    keeps at least half of them."""
    n = 1
    while n < len(word) and measure.textlength(word[: n + 1], font=font) <= width:
        n += 1
    soft = max(word.rfind(c, 0, n) for c in "._-/")
    return soft + 1 if soft + 1 >= max(1, n // 2) else n


def wrap(text: str, font: Any, width: float) -> list[str]:
    """``text`` as lines no wider than ``width`` pixels in ``font``, broken between words (and inside a word
    only when that word alone is wider); the lines hold every character of ``text`` but the spaces."""
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    line = ""
    for word in _join_separators(text.split()):
        candidate = f"{line} {word}" if line else word
        if measure.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while len(line) > 1 and measure.textlength(line, font=font) > width:
            n = _cut(line, font, width, measure)
            lines.append(line[:n])
            line = line[n:]
    if line or not lines:
        lines.append(line)
    return lines


def _fit(img: np.ndarray, cell: int) -> Any:
    """``img`` scaled (nearest, aspect kept) so that its longer side is ``cell``."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = cell / max(h, w)
    return Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.NEAREST)


def render(panels: list[Panel], *, cell: int = 96, columns: int = 8, heading: str = "") -> PIL.Image.Image:
    """Panels stacked vertically; each one a title and a wrapped grid of labelled cells.

    Titles wrap to the figure's width, and the figure widens (up to ``MAX_WIDTH``) for a word, such as a
    long layer name, that is wider than the grid: no text is drawn past the edge. Columns are wide enough
    for their labels; a cell keeps its picture's aspect ratio.
    """
    from PIL import Image, ImageDraw

    gap, pad = 6, 10
    heading_font, title_font, label_font = _font(17), _font(15), _font(11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [label for p in panels for label in p.labels]
    pitch = max(cell, math.ceil(max((measure.textlength(t, font=label_font) for t in labels), default=0))) + gap
    cols = max(1, min(columns, max(len(p.cells) for p in panels)))
    width = max(pad * 2 + cols * pitch, 480)
    texts = [(heading, heading_font)] * bool(heading) + [(p.title, title_font) for p in panels]
    longest = max((measure.textlength(w, font=f) for t, f in texts for w in _join_separators(t.split())), default=0)
    width = max(width, min(MAX_WIDTH, math.ceil(longest) + 2 * pad))

    def line_height(font: Any) -> int:
        return int(measure.textbbox((0, 0), "Ag", font=font)[3]) + 5

    label_h = line_height(label_font)
    heading_lines = wrap(heading, heading_font, width - 2 * pad) if heading else []
    titles = [wrap(p.title, title_font, width - 2 * pad) for p in panels]
    tiles = [[_fit(img, cell) for img in p.cells] for p in panels]
    row_h = [max((t.height for t in ts), default=cell) + label_h + gap for ts in tiles]
    top = len(heading_lines) * line_height(heading_font) + 6 * bool(heading)
    heights = [
        4 + len(t) * line_height(title_font) + 2 + -(-len(p.cells) // cols) * h
        for p, t, h in zip(panels, titles, row_h)
    ]
    canvas = Image.new("RGB", (width, pad * 2 + top + sum(heights)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for line in heading_lines:
        draw.text((pad, y), line, fill=(0, 0, 0), font=heading_font)
        y += line_height(heading_font)
    y = pad + top
    for panel, lines, panel_tiles, h, height in zip(panels, titles, tiles, row_h, heights):
        ty = y + 4
        for line in lines:
            draw.text((pad, ty), line, fill=(20, 20, 20), font=title_font)
            ty += line_height(title_font)
        for n, (tile, label) in enumerate(zip(panel_tiles, panel.labels)):
            r, c = divmod(n, cols)
            x0, y0 = pad + c * pitch + (cell - tile.width) // 2, ty + 2 + r * h
            canvas.paste(tile, (x0, y0))
            draw.text((x0, y0 + tile.height + 1), label, fill=(90, 90, 90), font=label_font)
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
        raise OptionError(
            "layer", f"not a Conv2d layer; convolutions are {', '.join(n for n, _ in convs[:10])} …", layer
        )
    return layer, found


def _input_cell(x: Any, mean: Any, std: Any) -> np.ndarray:
    """A normalised input tensor (1×3×H×W) back to uint8 RGB: what the model sees."""
    a = x[0].float().cpu().numpy().transpose(1, 2, 0) * np.array(std) + np.array(mean)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class Viewable(Loaded):
    """A loaded model and how its task feeds it an image (``kind``: crop, yolo, letterbox or rcnn)."""

    kind: str = "crop"
    imgsz: int | None = None
    stride: int = 32


@dataclass
class ModelInput:
    """What the network is called with, the same input as a picture, and how it was made."""

    x: Any  # 1×3×H×W float tensor
    picture: np.ndarray  # uint8 RGB
    how: str


def _hw(h: int, w: int) -> str:
    return f"{h}x{w}"


def model_input(loaded: Any, rgb: np.ndarray) -> ModelInput:
    """``rgb`` made into the network's input as its task's predictor makes it.

    Classifiers: their preprocessing (resize, centre crop, normalise). YOLO: ultralytics' letterbox to
    the model's size, grey (114) padding around the centred image, scaled to [0, 1], no mean/std.
    Segmenters: :class:`~cnnkit.tasks.segment.predict.Segmenter`'s letterbox (padding at the mean colour).
    R-CNNs: the image their predictors pass, then the model's own resize, padding and normalisation
    for the picture.
    """
    import torch

    kind = getattr(loaded, "kind", "crop")
    if kind == "yolo":
        from cnnkit import ultralytics_adapter

        ultralytics_adapter.ultralytics()
        from ultralytics.data.augment import LetterBox

        side = -(-int(loaded.imgsz) // loaded.stride) * loaded.stride
        boxed = np.ascontiguousarray(LetterBox((side, side), auto=False, stride=loaded.stride)(image=rgb))
        h, w = rgb.shape[:2]
        r = min(side / h, side / w)
        inner = _hw(round(h * r), round(w * r))
        x = torch.from_numpy(boxed.transpose(2, 0, 1).copy()).float().div_(255)[None]
        how = (
            f"letterboxed to {_hw(side, side)}"
            + (f", the {inner} image in grey padding" if inner != _hw(side, side) else "")
            + ", scaled to [0, 1]"
        )
        return ModelInput(x, boxed, how)
    if kind == "letterbox":
        from cnnkit.device import Runtime
        from cnnkit.io.decode import Decoded
        from cnnkit.tasks.segment.predict import Segmenter

        seg = Segmenter(loaded, Runtime.create("cpu", channels_last=False), loaded.imgsz)
        whole = Decoded("", rgb, rgb.shape[1], rgb.shape[0])
        box = seg._short_side(whole, seg.imgsz) if seg.short_side else seg._letterbox(whole, seg.imgsz)
        x = box.tensor[None]
        side = _hw(*x.shape[-2:])
        how = (
            f"letterboxed to {side}"
            + (f", the {_hw(*box.content)} image padded at the mean colour" if _hw(*box.content) != side else "")
            + ", normalised"
        )
        return ModelInput(x, _input_cell(x, seg.pre.mean, seg.pre.std), how)
    if kind == "rcnn":
        from cnnkit.models.preprocess import image_tensor, rcnn_input

        t = loaded.module.transform
        small, _ = rcnn_input(rgb, int(t.min_size[-1]), int(t.max_size))
        with torch.inference_mode():
            # resized here as the model would (it then keeps the size): receptive fields in the picture's pixels
            x = t.resize(image_tensor(small), None)[0][None]
            images, _ = t([x[0]])
        seen = images.tensors
        (h, w), (ph, pw) = images.image_sizes[0], seen.shape[-2:]
        how = (
            f"resized by the model to {_hw(h, w)} (shorter side up to {int(t.min_size[-1])}, longer up to "
            f"{int(t.max_size)})" + (f", padded to {_hw(ph, pw)}" if (h, w) != (ph, pw) else "") + ", normalised"
        )
        return ModelInput(x, _input_cell(seen, t.image_mean, t.image_std), how)
    pre = loaded.preprocess
    if pre is None:
        raise UsageError(f"{loaded.name}: no preprocessing is known, so its input cannot be built")
    x = pre(rgb)[None]
    how = (
        f"shorter side resized to {pre.resize}, centre crop {_hw(pre.crop, pre.crop)}, normalised"
        if pre.resize != pre.crop
        else f"resized and centre-cropped to {_hw(pre.crop, pre.crop)}, normalised"
    )
    return ModelInput(x, _input_cell(x, pre.mean, pre.std), how)


def feature_figure(
    loaded: Any, rgb: np.ndarray, layers: list[str] | None, *, channels: int = 8, cell: int = 96
) -> tuple[Any, dict[str, Any]]:
    """The PNG figure for ``cnnkit features`` and what it shows (input, layers, shapes, channels)."""
    from cnnkit.viz.summary import summarize

    model = loaded.module.eval()
    seen = model_input(loaded, rgb)
    rows = summarize(model, tuple(seen.x.shape), name=loaded.name, device="cpu").layers
    names = layers or default_layers(loaded, rows, seen.x)
    maps = capture(model, seen.x, names)
    modules = dict(model.named_modules())
    by_name = {r.name: r for r in rows}
    for n in names:
        if n not in by_name and (row := block_row(n, modules[n], rows)) is not None:
            by_name[n] = row
    h, w = seen.picture.shape[:2]
    panels = [Panel(f"input · 3x{h}x{w} · as the model sees it: {seen.how}", [seen.picture], ["input"])]
    info = []
    for n in names:
        panel, i = feature_panel(n, by_name.get(n), maps[n], channels)
        panels.append(panel)
        info.append(i)
    heading = f"{loaded.name}: feature maps, early layers (edges) to deep layers (objects)"
    figure = render(panels, cell=cell, columns=channels, heading=heading)
    return figure, {"model": loaded.name, "input": {"shape": [3, h, w], "as_seen": seen.how}, "layers": info}


def filter_figure(loaded: Any, layer: str | None, *, cell: int = 48, limit: int = 64) -> tuple[Any, dict[str, Any]]:
    """The PNG figure for ``cnnkit filters``: the kernels of the first (or the named) conv layer."""
    name, conv = first_conv(loaded.module, layer)
    panel, info = filter_panel(name, conv.weight, limit)
    figure = render([panel], cell=cell, columns=16, heading=f"{loaded.name}: learned filters")
    return figure, {"model": loaded.name, **info}


def _viewable(loaded: Loaded, kind: str) -> Viewable:
    """``loaded`` with how its task feeds it (a segmenter's letterbox side is its preprocessing's crop)."""
    fields = {k: getattr(loaded, k) for k in ("module", "name", "labels", "preprocess", "spec", "meta", "runtime")}
    imgsz = loaded.preprocess.crop if kind == "letterbox" and loaded.preprocess is not None else None
    return Viewable(**fields, kind=kind, imgsz=imgsz)


def _is_ultralytics_file(path: str) -> bool:
    """Whether a ``.pt`` pickles ultralytics classes (read from its opcodes; nothing is unpickled)."""
    from cnnkit.models.checkpoint import pickle_globals

    try:
        return any(g.startswith("ultralytics.") for g in pickle_globals(path))
    except CnnkitError:
        return False


def _yolo_viewable(loaded: Loaded) -> Viewable:
    """An ultralytics model from the resolver; its ``.model`` is the network to look inside."""
    yolo = loaded.module
    if getattr(yolo, "task", "detect") == "classify":
        raise UsageError(
            f"{loaded.name}: an ultralytics classify model; features and filters read its detectors and segmenters"
        )
    net = yolo.model.float().eval()
    args = getattr(net, "args", None) or {}
    trained = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
    imgsz = loaded.meta.get("imgsz") or (trained if isinstance(trained, int) else 640)
    stride = int(max(net.stride.max().item(), 32)) if hasattr(net, "stride") else 32
    return Viewable(
        net, loaded.name, loaded.labels, None, loaded.spec, {}, kind="yolo", imgsz=int(imgsz), stride=stride
    )


# how each task feeds a torch model an image (ultralytics models are "yolo")
_FEEDING = {"classify": "crop", "segment": "letterbox", "detect": "rcnn", "instance": "rcnn"}


def load_for_viewing(model: str | None, weights: str | None = None) -> Viewable:
    """A trained model by registry name, a cnnkit checkpoint (as ``model`` or ``weights``) or an ultralytics
    ``.pt``, loaded by :func:`~cnnkit.models.loader.resolve` for its task, with how that task feeds it an image.

    A ``.pt`` is an ultralytics model when it is named as the model, or given as ``weights`` without a
    model (or with a YOLO one) and its pickle names ultralytics classes; otherwise it is a state dict.
    """
    from cnnkit.models.checkpoint import read_meta
    from cnnkit.models.loader import exported_among, identify, resolve, self_described, sniff

    exported = exported_among(model, weights)
    if exported:  # a runtime's graph has no layers to look into
        raise UsageError(f"{exported}: an exported file has no PyTorch layers to show; use the checkpoint it came from")
    if model and sniff(model) == "checkpoint" and weights is None:
        model, weights = None, model
    if self_described(weights, model):
        task = str(read_meta(weights).get("task", "classify"))
    elif model:
        task = identify(model)[0]
    elif weights is not None and sniff(weights) == "pickle" and _is_ultralytics_file(weights):
        task = "detect"
    else:
        task = identify(DEFAULT_MODEL)[0]
    loaded = resolve(task, model, weights, default=DEFAULT_MODEL if model is None and task == "classify" else None)
    if loaded.runtime == "ultralytics":
        return _yolo_viewable(loaded)
    return _viewable(loaded, _FEEDING[task])


def picture_format(out: str) -> str:
    """PIL's format for the picture file ``out`` (PNG, JPEG or WebP); anything else is refused, before any work."""
    from pathlib import Path

    from PIL import Image

    if out == "-":
        raise UsageError("`output` -: a picture is written to a file, not to stdout (name one, e.g. out.png)")
    kind = Image.registered_extensions().get(Path(out).suffix.lower())
    if kind not in ("PNG", "JPEG", "WEBP"):
        raise UsageError(f"{out}: a picture is written as .png, .jpg or .webp")
    return kind


def save_figure(image: Any, out: str, *, overwrite: bool, numbered: bool = False) -> str:
    """Write a picture atomically, in the format its suffix names (PNG, JPEG or WebP), and return where; an
    existing file is kept unless ``overwrite``, and a default name (``numbered``) moves on to ``NAME-2.png``
    (:func:`~cnnkit.io.files.first_free`)."""
    from cnnkit.io.files import atomic_write_bytes, first_free

    kind = picture_format(out)
    buf = io.BytesIO()
    (image.convert("RGB") if kind == "JPEG" else image).save(buf, format=kind)  # JPEG has no alpha
    data = buf.getvalue()
    return str(
        first_free(
            out,
            lambda target, ow: atomic_write_bytes(target, data, overwrite=ow),
            overwrite=overwrite,
            numbered=numbered,
        )
    )
