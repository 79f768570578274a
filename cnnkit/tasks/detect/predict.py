"""Object detection: boxes with labels and scores, in the original image's pixels.

Two backends behind one :class:`Detector`:

* ultralytics YOLO (the bundled ``shapes-yolov8n``, hub names like ``yolov8n.pt``, any
  local ``.pt``): cnnkit letterboxes in its decode threads, runs the network on whole
  batches and applies ultralytics' own NMS, so the boxes are the ones ``yolo predict``
  gives, only faster. The network can also be a file from ``cnnkit export <yolo>`` run by
  onnxruntime or TorchScript (``--backend``), with the same letterbox and NMS.
* torchvision Faster R-CNN (``fasterrcnn_*``): COCO weights from torchvision's cache or a
  download, or a cnnkit checkpoint / state dict.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.config import MAX_IMGSZ
from cnnkit.device import Runtime
from cnnkit.engine import Predictor, StreamState, resolve_classes
from cnnkit.errors import OptionError, UsageError
from cnnkit.io.decode import Decoded
from cnnkit.io.pictures import PictureSaver
from cnnkit.records import Record
from cnnkit.results import Box, Boxes

PREDICTION_KEYS = ("label", "class_id", "score", "box")
YOLO_IOU = 0.7  # ultralytics' NMS IoU for prediction
WIDE_TOP_N = 1000  # detections an R-CNN's heads keep when a class filter runs after them

if TYPE_CHECKING:
    import torch
    from typing_extensions import Self


@dataclass
class Options:
    """Filtering applied to every image: confidence, NMS IoU, class subset, detections per image.

    ``multi_label`` lets one box carry several classes (what validators use, ultralytics' included);
    ``agnostic`` suppresses overlapping boxes whatever their classes, so one object that scores for two
    classes (a car as car and truck) gives one box, and one track.
    """

    conf: float = 0.25
    iou: float = YOLO_IOU  # Detector.load puts a torchvision detector's own (0.5) here when none is given
    classes: list[int] | None = None
    max_det: int = 300
    multi_label: bool = False
    agnostic: bool = False

    def __post_init__(self) -> None:
        """Scores and overlaps are fractions: a bad one fails here, before a network loads."""
        for name, value in (("conf", self.conf), ("iou", self.iou)):
            if not 0.0 <= value <= 1.0:
                raise OptionError(name, "must be between 0 and 1", value)


def check_inference_size(name: str, imgsz: int) -> None:
    """A YOLO letterbox side from 1 to :data:`MAX_IMGSZ`: the user's, checked before a runtime compiles the
    model at that size, and the one a ``.pt`` file was trained at."""
    if not 1 <= int(imgsz) <= MAX_IMGSZ:
        raise UsageError(f"{name}: inference size {imgsz} is not from 1 to {MAX_IMGSZ} (`imgsz`)")


class YoloBackend:
    """A YOLO detection network driven batch-wise (letterbox → forward → NMS).

    The network is an ultralytics model (:meth:`from_yolo`) or a file from ``cnnkit export`` run by
    onnxruntime or TorchScript (:meth:`from_exported`); all get the same letterbox, NMS and box scaling.
    """

    def __init__(
        self,
        net: Any,
        labels: list[str],
        runtime: Runtime,
        imgsz: int,
        name: str,
        *,
        stride: int = 32,
        end2end: bool = False,
        checkpoint: str | None = None,
        rect: bool = False,
    ) -> None:
        from cnnkit import ultralytics_adapter

        ultralytics_adapter.ultralytics()  # its offline settings first: an exported network may come without a YOLO object
        from ultralytics.data.augment import LetterBox

        self.name, self.labels, self.checkpoint = name, labels, checkpoint
        self.stride = stride
        check_inference_size(name, imgsz)  # the model's own training size included: a .pt file sets it
        self.imgsz = -(-int(imgsz) // stride) * stride
        self.end2end = end2end
        self.runtime_info: dict[str, Any] = {}  # set when the resolver compiled the network (cnnkit.runtimes)
        self.runtime = runtime
        self.net = runtime.prepare(net)
        # ultralytics' head keeps the anchors of the last input shape on itself: two threads' batches of other
        # shapes would swap them mid-forward (wrong boxes, or a size mismatch), so one forward at a time
        self.forward_lock = threading.Lock()
        # rect (a PyTorch network, or an ONNX one of any height and width): padded only to the stride, as
        # `yolo predict` does for a .pt model, so the boxes are its boxes; a file traced at one size (an
        # exported file, TorchScript) takes the square input it was traced at, as there
        self.letterbox = LetterBox((self.imgsz, self.imgsz), auto=rect, stride=self.stride)

    @classmethod
    def from_yolo(cls, yolo: Any, runtime: Runtime, imgsz: int | None, name: str) -> YoloBackend:
        """An ultralytics model, fused; ``imgsz`` defaults to its training size, else 640."""
        net = yolo.model
        if getattr(yolo, "task", "detect") != "detect":
            raise UsageError(f"{name}: an ultralytics {yolo.task} model, not a detector")
        args = getattr(net, "args", None) or {}
        trained = args.get("imgsz") if isinstance(args, dict) else getattr(args, "imgsz", None)
        stride = int(max(net.stride.max().item(), 32)) if hasattr(net, "stride") else 32
        from cnnkit.ultralytics_adapter import labels_of

        labels = labels_of(yolo)
        return cls(
            net.fuse(verbose=False) if hasattr(net, "fuse") else net,
            labels,
            runtime,
            int(imgsz or (trained if isinstance(trained, int) else 640)),
            name,
            stride=stride,
            end2end=bool(getattr(net, "end2end", False)),
            checkpoint=getattr(yolo, "ckpt_path", None),
            rect=True,
        )

    @classmethod
    def from_exported(
        cls, loaded: Any, runtime: Runtime, imgsz: int | None, path: str, *, rect: bool = False
    ) -> YoloBackend:
        """``path``, a file from ``cnnkit export <yolo>``: labels, letterbox size and stride come from its metadata;
        ``rect`` for a network that takes any height and width (the compiled runtimes' ONNX)."""
        size = loaded.meta.get("letterbox")
        if not isinstance(size, int):
            raise UsageError(
                f"{path}: no letterbox size in its cnnkit metadata; export the YOLO model with `cnnkit export`"
            )
        stride = int(loaded.meta.get("stride", 32))
        if imgsz and -(-int(imgsz) // stride) * stride != size:  # the export rounded it up to the stride too
            raise OptionError(
                "imgsz", f"{path} was exported for {size}×{size} inputs; export it again with `imgsz` {imgsz}", imgsz
            )
        return cls(
            loaded.module,
            list(loaded.labels),
            runtime,
            size,
            loaded.name,
            stride=stride,
            end2end=bool(loaded.meta.get("end2end", False)),
            rect=rect,
        )

    @property
    def min_side(self) -> None:
        """No reduced decode: the letterbox resizes as ultralytics' does (OpenCV bilinear, no antialiasing), so
        only a full decode gives ``yolo predict``'s input (:data:`~cnnkit.io.decode.DRAFT_MARGIN`)."""
        return None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """The image letterboxed to the model's size, as a uint8 CHW tensor (scaled to [0, 1] per batch)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.letterbox(image=rgb).transpose(2, 0, 1)))

    def forward(self, inputs: list[Any], shapes: list[tuple[int, int]], opts: Options) -> list[np.ndarray]:
        """A batch through the network and NMS: per image, ``[x1, y1, x2, y2, score, class]`` rows in the
        pixels of its (drafted) input, ``shapes``."""
        import torch
        from ultralytics.utils import nms, ops

        from cnnkit.models.preprocess import by_shape

        result: list[Any] = [None] * len(inputs)
        with torch.inference_mode():
            for group in by_shape(inputs):  # rect inputs differ in shape: one forward per shape
                x = self.runtime.batch(torch.stack([inputs[i] for i in group])).div_(255)
                with self.forward_lock:
                    raw = self.net(x)
                out = nms.non_max_suppression(
                    raw,
                    opts.conf,
                    opts.iou,
                    opts.classes,
                    agnostic=opts.agnostic,
                    multi_label=opts.multi_label,
                    max_det=opts.max_det,
                    end2end=self.end2end,
                )
                for i, det in zip(group, out):
                    det = det[:, :6].float().cpu().clone()
                    det[:, :4] = ops.scale_boxes(x.shape[2:], det[:, :4], shapes[i])
                    result[i] = det.numpy()
        return result


class TorchvisionBackend:
    """A torchvision two-stage detector; it resizes internally, boxes come back in input pixels."""

    def __init__(self, module: Any, labels: list[str], runtime: Runtime, imgsz: int | None, name: str) -> None:
        self.name = name
        self.labels = labels
        self.runtime = runtime
        if imgsz:  # keep the model's max/min side ratio
            ratio = module.transform.max_size / module.transform.min_size[0]
            module.transform.min_size = (int(imgsz),)
            module.transform.max_size = int(round(imgsz * ratio))
        self.imgsz = int(module.transform.min_size[0])
        self.nms_iou = float(module.roi_heads.nms_thresh)  # torchvision's own (0.5), unless `iou` is given
        self.net = runtime.prepare(module)

    @property
    def min_side(self) -> None:
        """No reduced decode: torchvision's transform resizes without antialiasing, so only a full decode gives
        its input (:data:`~cnnkit.io.decode.DRAFT_MARGIN`)."""
        return None

    def preprocess(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """A uint8 CHW tensor of the image as decoded (one over ``RCNN_FULL_PIXELS`` reduced to the model's working
        size, a thin one padded: :func:`~cnnkit.models.preprocess.rcnn_input`), and the image's size in it."""
        import torch

        from cnnkit.models.preprocess import rcnn_input

        transform = self.net.transform
        rgb_in, content = rcnn_input(rgb, int(transform.min_size[-1]), int(transform.max_size))
        return torch.from_numpy(np.ascontiguousarray(rgb_in.transpose(2, 0, 1))), content

    def forward(self, inputs: list[Any], shapes: list[tuple[int, int]], opts: Options) -> list[np.ndarray]:
        """A batch through the network: per image, ``[x1, y1, x2, y2, score, class]`` rows in the pixels of
        its (drafted) input, ``shapes``."""
        import torch
        import torchvision

        heads = self.net.roi_heads
        heads.score_thresh, heads.nms_thresh = opts.conf, opts.iou
        # the heads keep their top N over every class: with `classes`, N is the wanted classes' after filtering
        heads.detections_per_img = opts.max_det if opts.classes is None else max(opts.max_det, WIDE_TOP_N)
        from cnnkit.models.preprocess import by_shape

        outs: list[Any] = [None] * len(inputs)
        with torch.inference_mode():
            for group in by_shape([t for t, _ in inputs]):
                batch = [inputs[i][0].to(self.runtime.device, dtype=self.runtime.dtype).div_(255) for i in group]
                for i, o in zip(group, self.net(batch)):
                    outs[i] = o
        result = []
        for o, (_, (ch, cw)), (h, w) in zip(outs, inputs, shapes):
            cls = o["labels"].float().cpu() - 1  # torchvision label 0 is the background
            boxes = o["boxes"].float().cpu()
            if (ch, cw) != (h, w):  # reduced in preprocess: back to the decoded image's pixels
                boxes = boxes * torch.tensor([w / cw, h / ch, w / cw, h / ch])
            det = torch.cat([boxes, o["scores"].float().cpu()[:, None], cls[:, None]], dim=1)
            if opts.classes is not None:
                det = det[torch.isin(det[:, 5].long(), torch.tensor(opts.classes))]
            if opts.agnostic:  # the heads suppress within each class only
                det = det[torchvision.ops.nms(det[:, :4], det[:, 4], opts.iou)]
            result.append(det[: opts.max_det].numpy())
        return result


def load_backend(
    model: str | None, weights: str | None, runtime: Runtime, imgsz: int | None, backend: str | None = None
) -> YoloBackend | TorchvisionBackend:
    """The network :func:`~cnnkit.models.loader.resolve` finds, behind the backend that drives it:
    an ultralytics model or an exported YOLO file (same letterbox and NMS), or a torchvision detector."""
    from cnnkit.models.loader import resolve
    from cnnkit.runtimes import default_backend

    if imgsz is not None:  # before a runtime compiles the model at that size
        check_inference_size(model or weights or "detect", imgsz)
    loaded = resolve(
        "detect", model, weights, backend=default_backend(backend, weights), device=runtime.device, imgsz=imgsz
    )
    if loaded.runtime == "ultralytics":
        return YoloBackend.from_yolo(loaded.module, runtime, imgsz or loaded.meta.get("imgsz"), loaded.name)
    # a graph of any height and width (the resolver's ONNX, or `cnnkit export --dynamic-batch`'s): padded to the
    # stride as the .pt model is, same boxes; a file traced at one size takes the square it was traced at
    rect = loaded.runtime in ("onnxruntime", "openvino") and getattr(loaded.module, "input_hw", ()) is None
    compiled = loaded.meta.get("runtime_info")
    if compiled:  # compiled by the resolver for this imgsz (rounded to the stride)
        yolo = YoloBackend.from_exported(loaded, runtime.for_module(loaded.runtime), None, compiled["path"], rect=rect)
        yolo.runtime_info, yolo.checkpoint = compiled, loaded.meta.get("checkpoint")
        return yolo
    if loaded.runtime != "torch":
        return YoloBackend.from_exported(loaded, runtime.for_module(loaded.runtime), imgsz, str(weights), rect=rect)
    return TorchvisionBackend(loaded.module, loaded.labels, runtime, imgsz, loaded.name)


class Detector(Predictor):
    """The detect task's predictor: a YOLO or torchvision backend, boxes as :class:`~cnnkit.results.Boxes`."""

    task = "detect"

    def __init__(
        self,
        backend: Any,
        options: Options,
        *,
        save_pictures: bool = True,
        save_txt: bool = False,
        save_conf: bool = False,
        save_crop: bool = False,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.labels: list[str] = backend.labels
        self.options = options
        self.min_side = backend.min_side
        self.save_pictures, self.save_txt, self.save_crop = save_pictures, save_txt, save_crop
        self.save_conf = save_conf

    @property
    def reads_pixels(self) -> bool:
        """Only :meth:`preprocess` reads the picture; the boxes need its size."""
        return False

    @property
    def input_side(self) -> int | None:
        """YOLO's letterbox side; an R-CNN's input varies with the image."""
        return int(self.backend.imgsz) if isinstance(self.backend, YoloBackend) else None

    @property
    def saves_pictures(self) -> bool:
        """Annotated pictures and crops need the full-size image; label files alone do not."""
        return self.save_pictures or self.save_crop

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        conf: float = 0.25,
        iou: float | None = None,
        imgsz: int | None = None,
        classes: Sequence[int | str] | None = None,
        max_det: int = 300,
        agnostic_nms: bool = False,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        save_pictures: bool = True,
        save_txt: bool = False,
        save_conf: bool = False,
        save_crop: bool = False,
        backend: str | None = None,
        **extra: Any,
    ) -> Self:
        """``extra``: a subclass's own options, passed to its constructor (the tracker's)."""
        opts = Options(conf, YOLO_IOU if iou is None else iou, max_det=max_det, agnostic=agnostic_nms)  # checked
        net = load_backend(model, weights, Runtime.create(device, half=half, threads=threads), imgsz, backend)
        opts.classes = resolve_classes(classes, net.labels)
        if iou is None:  # the network's own: a torchvision detector's built value, else ultralytics'
            opts.iou = getattr(net, "nms_iou", YOLO_IOU)
        return cls(
            net, opts, save_pictures=save_pictures, save_txt=save_txt, save_conf=save_conf, save_crop=save_crop, **extra
        )

    def preprocess(self, decoded: Decoded) -> torch.Tensor | tuple[torch.Tensor, tuple[int, int]]:
        """The backend's input for one image."""
        return self.backend.preprocess(decoded.rgb)

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> list[Boxes]:
        """The backend's detections as boxes in each input's own pixels, clipped to it."""
        dets = self.backend.forward(inputs, [d.rgb.shape[:2] for d in decoded], self.options)
        return [self._boxes(det, d) for det, d in zip(dets, decoded)]

    def _boxes(self, det: np.ndarray, d: Decoded) -> Boxes:
        """One image's ``[x1, y1, x2, y2, score, class]`` rows, scaled from the draft to the input's own
        pixels and clipped to it."""
        sx, sy = d.scale
        items = []
        for x1, y1, x2, y2, score, cls in det.tolist():
            box = (
                min(max(x1 * sx, 0.0), d.width),
                min(max(y1 * sy, 0.0), d.height),
                min(max(x2 * sx, 0.0), d.width),
                min(max(y2 * sy, 0.0), d.height),
            )
            cid = int(cls)
            label = self.labels[cid] if 0 <= cid < len(self.labels) else str(cid)
            items.append(Box(label, cid, round(float(score), 6), tuple(round(v, 2) for v in box)))
        return Boxes(items, d.width, d.height)

    def save_outputs(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """The annotated picture, YOLO label file and crops, as the save options ask."""
        if self.save_pictures:
            record.extra["saved"] = saver.save(self.annotate(decoded, record), record.path)
        self.save_files(saver, decoded, record)

    def save_files(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """The YOLO label file and crops, as the save options ask; a video frame's are named ``<stem>_<frame>``."""
        result = record.result
        assert isinstance(result, Boxes)
        tag = "" if record.frame is None else f"_{record.frame}"
        if self.save_txt:
            record.extra["label_file"] = str(result.save_txt(saver, record.path, conf=self.save_conf, tag=tag))
        if self.save_crop:
            crops = result.save_crops(saver, record.path, decoded.picture(), tag=tag)
            record.extra["crops"] = [str(p) for p in crops]


PREDICTOR = Detector
