"""``cnnkit explain``: class-activation maps, where a CNN looked for a class, through ``grad-cam``
(pytorch-grad-cam).

Classifiers: the top-1 class (or ``target``) of each image. Detectors (ultralytics YOLO): each kept
box's class (or ``target``), scored as the class logit of the anchor that produced the box, so the
map explains *that* detection. Maps are computed on the model's own input (a centre crop, a
letterbox) and put back on the picture at its own size; the overlay is the picture tinted by the map
(red: strong), with the box drawn for a detection.

Methods (:data:`METHODS`): ``gradcam`` (Selvaraju et al.), ``gradcam++``, ``xgradcam``, ``layercam``,
``hirescam`` use gradients; ``eigencam`` (first principal component of the activations) needs none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, OptionError, UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
}
DEFAULT_METHODS = ("gradcam", "gradcam++")


@dataclass
class Failed:
    """An image that could not be explained: the file and the one-line reason (the run goes on)."""

    path: str
    error: str


@dataclass
class Explanation:
    """One map: which image, method and class; ``heatmap`` is H×W in [0, 1] at the picture's own size."""

    path: str
    method: str
    target: str
    class_id: int
    score: float | None
    heatmap: np.ndarray = field(repr=False)
    box: tuple[float, float, float, float] | None = None

    def overlay(self, picture: np.ndarray, alpha: float = 0.5) -> Image:
        """``picture`` tinted by the map (JET colours), the box outlined, a caption in the corner."""
        import numpy as np
        from PIL import Image, ImageDraw
        from pytorch_grad_cam.utils.image import show_cam_on_image

        from cnnkit.io.draw import draw_caption

        tinted = show_cam_on_image(
            picture.astype(np.float32) / 255, self.heatmap.astype(np.float32), use_rgb=True, image_weight=1 - alpha
        )
        caption = f"{self.target}" + (f" {self.score:.2f}" if self.score is not None else "") + f" · {self.method}"
        img = draw_caption(np.ascontiguousarray(tinted), [caption])
        if self.box is not None:
            ImageDraw.Draw(img).rectangle(self.box, outline=(255, 255, 255), width=max(1, min(img.size) // 150))
        return Image.Image.copy(img)


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The methods by their names in :data:`METHODS` (case-insensitive), or an :class:`OptionError`."""
    names = tuple(m.lower() for m in methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise OptionError("methods", f"expected some of {', '.join(METHODS)}", ", ".join(unknown) or "")
    return names


def _cam(method: str, model: Any, layers: list[Any]) -> Any:
    try:
        import pytorch_grad_cam
    except ImportError:
        raise CnnkitError("explain needs the grad-cam package: pip install 'cnnkit[explain]'") from None

    return getattr(pytorch_grad_cam, METHODS[method])(model=model, target_layers=layers)


def _class_id(target: str | None, labels: Sequence[str], model: str) -> int | None:
    if target is None:
        return None
    if target in labels:
        return list(labels).index(target)
    if target.isdigit() and int(target) < len(labels):
        return int(target)
    shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
    raise OptionError("target", f"not a class of {model} ({shown})", target)


def _last_conv(module: Any) -> Any:
    import torch

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise CnnkitError("the model has no Conv2d layer to explain")
    return convs[-1]


def _named_layer(module: Any, name: str) -> Any:
    found = dict(module.named_modules()).get(name)
    if found is None:
        raise OptionError("layer", "not a layer of the model (see `cnnkit summary`)", name)
    return found


def _check_maps(model: Any, found: Any, name: str, x: Any) -> None:
    """``layer`` ``name`` (``found`` in ``model``) gives the C×H×W maps a CAM weighs; a vector (a classifier's
    fc), a tuple of head outputs or a 1×1 pooled map would be a traceback or a blank map, so one line instead."""
    import torch

    seen: list[Any] = []
    handle = found.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    out = seen[-1] if seen else None
    shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-1] * out.shape[-2] < 2:
        raise OptionError("layer", f"gives {shape}, not C×H×W maps to explain (choose a convolutional block)", name)


def _trainable(module: Any) -> Any:
    """The network in float32 with gradients (a predictor's copy may be fp16, channels-last, frozen)."""
    import torch

    module = module.float().to(memory_format=torch.contiguous_format)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


# -- classifiers ---------------------------------------------------------------------------------------
def explain_classifier(
    predictor: Any,
    paths: Sequence[str],
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    target: str | None = None,
    layer: str | None = None,
) -> Iterator[Explanation | Failed]:
    """Maps for a :class:`~cnnkit.tasks.classify.predict.Classifier` (torch runtime) on each image."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cnnkit.io.decode import decode

    methods = check_methods(methods)
    if getattr(predictor.loaded, "runtime", "torch") != "torch":
        raise UsageError(f"{predictor.name}: explain needs the PyTorch model (gradients), not an exported file")
    wanted = _class_id(target, predictor.labels, predictor.name)
    model = _trainable(predictor.model)
    layers = [_named_layer(model, layer) if layer else _last_conv(model)]
    device = predictor.runtime.device
    checked = False
    for path in paths:
        try:
            decoded = decode(path, min_side=predictor.min_side)
        except CnnkitError as exc:
            yield Failed(path, str(exc))
            continue
        x = predictor.preprocess(decoded).unsqueeze(0).to(device)
        if layer and not checked:
            _check_maps(model, layers[0], layer, x)
            checked = True
        with torch.no_grad():
            probs = model(x).float().softmax(1)[0]
        cid = int(probs.argmax()) if wanted is None else wanted
        picture = decoded.picture()
        for method in methods:
            with _cam(method, model, layers) as cam:
                grey = cam(input_tensor=x, targets=[ClassifierOutputTarget(cid)])[0]
            yield Explanation(
                path,
                method,
                predictor.labels[cid],
                cid,
                round(float(probs[cid]), 4),
                _uncrop(grey, picture.shape[:2], predictor.pre.resize, predictor.pre.crop),
            )


def _uncrop(grey: np.ndarray, size: tuple[int, int], resize: int, crop: int) -> np.ndarray:
    """A map of the centre crop put back on the whole picture (zero outside the crop)."""
    import numpy as np
    from PIL import Image

    h, w = size
    s = resize / min(h, w)
    rh, rw = max(1, round(h * s)), max(1, round(w * s))
    canvas = np.zeros((max(rh, crop), max(rw, crop)), np.float32)
    top, left = max(0, (rh - crop) // 2), max(0, (rw - crop) // 2)
    canvas[top : top + crop, left : left + crop] = np.asarray(
        Image.fromarray(grey.astype(np.float32)).resize((crop, crop), Image.Resampling.BILINEAR)
    )
    canvas = canvas[:rh, :rw]
    return np.clip(np.asarray(Image.fromarray(canvas).resize((w, h), Image.Resampling.BILINEAR)), 0, 1)


# -- YOLO detectors ------------------------------------------------------------------------------------
class _RawYolo:
    """The YOLO network's raw head output, ``(N, 4 + classes, anchors)``: boxes (xywh) and class scores."""

    def __new__(cls, net: Any) -> Any:
        import torch

        class RawYolo(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = self.inner(x)
                while isinstance(out, (tuple, list)):
                    out = out[0]
                if isinstance(out, dict):
                    out = next(iter(out.values()))
                return out

        return RawYolo(net)


class _AnchorScore:
    """The score of class ``class_id`` at one anchor: what a detection's Grad-CAM differentiates."""

    def __init__(self, anchor: int, class_id: int) -> None:
        self.anchor, self.class_id = anchor, class_id

    def __call__(self, output: Any) -> Any:
        return output[4 + self.class_id, self.anchor]


def _anchor_of(raw: Any, box: Sequence[float], class_id: int) -> int:
    """The anchor whose predicted box overlaps ``box`` (letterbox pixels) most, weighted by its class score."""
    import torch

    xywh, scores = raw[:4].T, raw[4 + class_id]
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    b = torch.tensor(box, dtype=xyxy.dtype, device=xyxy.device)
    inter = (torch.minimum(xyxy[:, 2:], b[2:]) - torch.maximum(xyxy[:, :2], b[:2])).clamp(min=0).prod(1)
    union = (xyxy[:, 2:] - xyxy[:, :2]).prod(1) + (b[2:] - b[:2]).prod() - inter
    return int(((inter / union.clamp(min=1e-6)) * scores).argmax())


def explain_detector(
    predictor: Any,
    paths: Sequence[str],
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    target: str | None = None,
    layer: str | None = None,
    max_boxes: int = 3,
) -> Iterator[Explanation | Failed]:
    """Maps for the ``max_boxes`` best boxes of each image (of class ``target`` when given; with no such
    box, the anchor scoring ``target`` highest) from an ultralytics YOLO :class:`Detector`."""
    import torch

    from cnnkit.io.decode import decode
    from cnnkit.tasks.detect.predict import YoloBackend

    methods = check_methods(methods)
    backend = predictor.backend
    if not isinstance(backend, YoloBackend) or (backend.checkpoint is None and not hasattr(backend.net, "model")):
        raise OptionError("model", "explain supports classifiers and ultralytics YOLO detectors", predictor.name)
    wanted = _class_id(target, backend.labels, predictor.name)
    net = _trainable(backend.net)
    raw_model = _RawYolo(net)
    head = net.model[-1]
    layers = [_named_layer(net, layer)] if layer else [net.model[i] for i in getattr(head, "f", [len(net.model) - 2])]
    device = backend.runtime.device
    checked = False
    for path in paths:
        try:
            decoded = decode(path)
        except CnnkitError as exc:
            yield Failed(path, str(exc))
            continue
        picture = decoded.rgb
        x = backend.preprocess(picture).unsqueeze(0).to(device).float().div(255)
        (record,) = predictor.stream([path])
        if layer and not checked:
            _check_maps(raw_model, layers[0], layer, x)
            checked = True
        with torch.no_grad():
            raw = raw_model(x)[0].float()
        for name in ("anchors", "strides"):  # made under inference_mode by predict: autograd cannot save them
            if isinstance(getattr(head, name, None), torch.Tensor):
                setattr(head, name, getattr(head, name).clone())
        r, (pad_x, pad_y) = _letterbox_geometry(picture.shape[:2], backend.imgsz, tuple(x.shape[-2:]))
        jobs: list[tuple[int, int, float | None, tuple[float, float, float, float] | None]] = []
        boxes = [p for p in record.predictions if wanted is None or p["class_id"] == wanted][:max_boxes]
        for p in boxes:
            lb = [p["box"][0] * r + pad_x, p["box"][1] * r + pad_y, p["box"][2] * r + pad_x, p["box"][3] * r + pad_y]
            jobs.append((_anchor_of(raw, lb, p["class_id"]), p["class_id"], p["score"], tuple(p["box"])))
        if not jobs and wanted is not None:
            anchor = int(raw[4 + wanted].argmax())
            jobs.append((anchor, wanted, round(float(raw[4 + wanted, anchor]), 4), None))
        if not jobs:  # said, so that a picture missing from the maps is not a mystery
            logging.getLogger("cnnkit").warning(
                "%s: no box to explain (with a target class, where that class scores highest is explained)", path
            )
        for anchor, cid, score, box in jobs:
            for method in methods:
                with _cam(method, raw_model, layers) as cam:
                    grey = cam(input_tensor=x, targets=[_AnchorScore(anchor, cid)])[0]
                yield Explanation(
                    path,
                    method,
                    backend.labels[cid],
                    cid,
                    score,
                    _unletterbox(grey, picture.shape[:2], r, (pad_x, pad_y)),
                    box,
                )


def _letterbox_geometry(size: tuple[int, int], imgsz: int, fed: tuple[int, ...]) -> tuple[float, tuple[int, int]]:
    """ultralytics' centred letterbox of a ``size`` picture into the ``fed`` (height, width) input: the scale
    and the left/top padding, in letterbox pixels (the input is padded to the stride, not always square)."""
    h, w = size
    r = min(imgsz / h, imgsz / w)
    nw, nh = round(w * r), round(h * r)
    return r, (round((fed[1] - nw) / 2 - 0.1), round((fed[0] - nh) / 2 - 0.1))


def _unletterbox(grey: np.ndarray, size: tuple[int, int], r: float, pad: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    h, w = size
    px, py = pad
    inner = grey[py : py + round(h * r), px : px + round(w * r)]
    return np.clip(
        np.asarray(Image.fromarray(inner.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR)), 0, 1
    )


# -- the command's body ---------------------------------------------------------------------------------
def explain(
    sources: Sequence[str],
    *,
    task: str = "classify",
    model: str | None = None,
    weights: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    target: str | None = None,
    layer: str | None = None,
    device: str | None = None,
    conf: float = 0.25,
    max_boxes: int = 3,
) -> Iterator[Explanation | Failed]:
    """Class-activation maps for ``sources`` (image paths, folders, globs) with a classify or detect model; an
    image that cannot be read is a :class:`Failed` and the next one follows."""
    from cnnkit import api
    from cnnkit.io.sources import expand_sources

    if task not in ("classify", "detect"):
        raise OptionError("task", "explain works for classify and detect", task)
    from cnnkit.models.loader import exported_among

    exported = exported_among(model, weights)
    if exported:
        raise UsageError(f"{exported}: explain needs the PyTorch model (gradients), not an exported file")
    items = [it for it in expand_sources(list(sources)) if it.data is None]
    for it in items:
        if it.error is not None:
            yield Failed(it.path, it.error)
    paths = [it.path for it in items if it.error is None]
    if not paths:
        return
    if task == "classify":
        predictor = api.load("classify", model=model, weights=weights, device=device, backend="torch")
        yield from explain_classifier(predictor, paths, methods=methods, target=target, layer=layer)
    else:
        predictor = api.load("detect", model=model, weights=weights, device=device, conf=conf, backend="torch")
        yield from explain_detector(predictor, paths, methods=methods, target=target, layer=layer, max_boxes=max_boxes)
