"""Instance segmentation: Mask R-CNN boxes, labels and per-instance masks (COCO RLE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.device import Runtime
from cnnkit.errors import CnnkitError
from cnnkit.io.decode import Decoded, check_budget
from cnnkit.io.draw import colour
from cnnkit.models import hub
from cnnkit.models.checkpoint import load_state_dict
from cnnkit.models.loader import Loaded, _load_into, load_checkpoint
from cnnkit.models.registry import get_spec
from cnnkit.records import Record
from cnnkit.tasks.base import PictureSaver, Predictor, safe_name
from cnnkit.tasks.instance.post import decode_rle

DEFAULT_MODEL = "shapes-maskrcnn"
_CLS_KEY = "roi_heads.box_predictor.cls_score.weight"


def load_instance_model(name: str | None, weights: str | None) -> Loaded:
    """``--model``/``--weights`` for Mask R-CNNs (labels exclude background; see ``zoo_instance``)."""
    if weights is not None and Path(weights).suffix == ".safetensors":
        return load_checkpoint(weights, "instance")
    spec = get_spec(name or DEFAULT_MODEL, "instance")
    labels = list(spec.labels) if spec.labels else []
    if spec.source == "torchvision" and (weights is None or not labels):
        labels = list(hub.torchvision_weights(spec.weights).meta["categories"])[1:]
    if weights is not None:
        state = load_state_dict(weights)
        if _CLS_KEY in state and state[_CLS_KEY].shape[0] - 1 != len(labels):
            labels = [f"class_{i}" for i in range(state[_CLS_KEY].shape[0] - 1)]
        module = spec.builder(num_classes=len(labels), **spec.meta.get("arch_kwargs", {}))
        _load_into(module, state, weights)
        return Loaded(module, spec.name, labels, None, spec, {})
    if spec.source == "bundled":
        path = hub.bundled_path(spec.weights)
        if not path.is_file():
            raise CnnkitError(f"{spec.name}: bundled weights {path} are missing; retrain with "
                              "scripts/train_shapes_maskrcnn.py or pass --weights PATH")
        loaded = load_checkpoint(path, "instance")
        loaded.name = spec.name
        return loaded
    state = hub.torchvision_state_dict(spec.name, spec.weights)  # before building: offline fails fast
    module = spec.builder(num_classes=len(labels))
    _load_into(module, state, spec.name)
    return Loaded(module, spec.name, labels, None, spec, {})


@dataclass
class _Input:
    """A preprocessed image: the tensor, and the height and width of the image inside its padding."""

    tensor: Any
    content: tuple[int, int]


_STRIP = 1 << 20  # mask values interpolated at once while pasting


def _axis(n_in: int, n_out: int, start: int, stop: int) -> tuple[Any, Any, Any]:
    """Source indices and weight of outputs ``start…stop-1`` of torch's bilinear resize
    (``align_corners=False``) from ``n_in`` to ``n_out`` samples, in float32 as torch computes them."""
    import numpy as np

    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum((np.arange(start, stop, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, np.clip(src - i0, 0, 1).astype(np.float32)


def paste_rle(mask: Any, box: Any, height: int, width: int, threshold: float) -> dict[str, Any]:
    """One M×M soft mask pasted into a ``height``×``width`` image as torchvision pastes it (padded by
    one, box widened by (M+2)/M, bilinear to the box, thresholded), returned as COCO RLE.

    Only the box is computed, a block at a time, and only the mask's runs are kept, so a
    12000×12000 image costs no 144-million-value array per instance.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    total = height * width
    if threshold <= 0:  # every pixel passes, the zeros outside the box too
        counts = [0, total]
    else:
        m = np.pad(np.asarray(mask, np.float32), 1)
        n = m.shape[0]
        scale = np.float32(n / (n - 2))
        box = np.asarray(box, np.float32)
        half_w, half_h = (box[2] - box[0]) * np.float32(0.5) * scale, (box[3] - box[1]) * np.float32(0.5) * scale
        cx, cy = (box[2] + box[0]) * np.float32(0.5), (box[3] + box[1]) * np.float32(0.5)
        x0, x1 = int(np.int64(cx - half_w)), int(np.int64(cx + half_w))
        y0, y1 = int(np.int64(cy - half_h)), int(np.int64(cy + half_h))
        bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        left, right, top, bottom = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
        starts, ends = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        rstep = max(1, min(bottom - top, _STRIP))
        cstep = max(1, _STRIP // rstep)
        for c in range(left, right, cstep):
            c0, c1, cw = _axis(n, bw, c - x0, min(c + cstep, right) - x0)
            for r in range(top, bottom, rstep):
                r0, r1, rw = _axis(n, bh, r - y0, min(r + rstep, bottom) - y0)
                upper = m[np.ix_(r0, c0)] * (1 - cw) + m[np.ix_(r0, c1)] * cw
                lower = m[np.ix_(r1, c0)] * (1 - cw) + m[np.ix_(r1, c1)] * cw
                on = upper * (1 - rw)[:, None] + lower * rw[:, None] >= threshold
                edges = np.diff(np.pad(on.T, ((0, 0), (1, 1))).view(np.int8), axis=1)
                at = (c + np.arange(on.shape[1]))[:, None] * height + r + np.arange(edges.shape[1])
                starts.append(at[edges == 1])
                ends.append(at[edges == -1])
        s, e = np.sort(np.concatenate(starts)), np.sort(np.concatenate(ends))
        joined = np.flatnonzero(e[:-1] == s[1:])  # a run going on past a block or a column's end
        s, e = np.delete(s, joined + 1), np.delete(e, joined)
        counts = np.empty(2 * len(s) + 1, np.int64)
        counts[0::2] = np.concatenate([s, [total]]) - np.concatenate([[0], e])
        counts[1::2] = e - s
        counts = counts[:-1].tolist() if len(counts) > 1 and counts[-1] == 0 else counts.tolist()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


class InstanceSegmenter(Predictor):
    """Boxes, labels, scores and masks per image; ``--save-masks`` writes one PNG per instance."""

    task = "instance"

    def __init__(
        self, loaded: Loaded, runtime: Runtime, *, conf: float = 0.5, mask_threshold: float = 0.5,
        max_det: int = 100, save_masks: bool = False,
    ) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.labels = loaded.labels
        self.runtime = runtime
        self.conf, self.mask_threshold, self.max_det = conf, mask_threshold, max_det
        self.save_masks = save_masks
        model = loaded.module
        # Mask R-CNN keeps at most this many detections before our own threshold.
        model.roi_heads.detections_per_img = max(max_det, 1)
        model.roi_heads.score_thresh = min(model.roi_heads.score_thresh, conf)
        self.model = runtime.prepare(model)

    @classmethod
    def load(
        cls, model: str | None = None, weights: str | None = None, *, device: str | None = None,
        half: bool = False, threads: int | None = None, conf: float = 0.5, mask_threshold: float = 0.5,
        max_det: int = 100, save_masks: bool = False,
    ) -> "InstanceSegmenter":
        runtime = Runtime.create(device, half=half, threads=threads)
        return cls(load_instance_model(model, weights), runtime, conf=conf, mask_threshold=mask_threshold,
                   max_det=max_det, save_masks=save_masks)

    def preprocess(self, decoded: Decoded) -> _Input:
        """A [0, 1] tensor of at most about twice the model's working size, and where the image is in it
        (:func:`~cnnkit.models.preprocess.rcnn_input`: big images reduced, thin ones padded)."""
        from cnnkit.models.preprocess import rcnn_input, rcnn_working_size
        from cnnkit.tasks.instance.data import image_tensor

        transform = self.model.transform
        min_size, max_size = int(transform.min_size[-1]), int(transform.max_size)
        wh, ww = rcnn_working_size(*decoded.rgb.shape[:2], min_size, max_size)
        check_budget(decoded, 3 * wh * ww, f"the model's resize to {ww}x{wh}")
        rgb, content = rcnn_input(decoded.rgb, min_size, max_size)
        return _Input(image_tensor(rgb), content)

    def predict_batch(self, inputs: list[_Input], decoded: list[Decoded]) -> list[list[dict[str, Any]]]:
        """Mask R-CNN's own steps, stopping before it pastes every mask into a full-size float image:
        each kept mask is pasted here, box by box, straight into COCO RLE (:func:`paste_rle`)."""
        from collections import OrderedDict

        import torch

        model = self.model
        with torch.inference_mode():
            images, _ = model.transform([x.tensor.to(self.runtime.device, self.runtime.dtype) for x in inputs])
            features = model.backbone(images.tensors)
            if isinstance(features, torch.Tensor):
                features = OrderedDict([("0", features)])
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        return [self._predictions(det, x, size, dec)
                for det, x, size, dec in zip(detections, inputs, images.image_sizes, decoded)]

    def _predictions(self, det: dict[str, Any], x: _Input, size: Any, dec: Decoded) -> list[dict[str, Any]]:
        """One image's detections in its original pixels (``class_id`` = network label − 1)."""
        import numpy as np

        scores = det["scores"].float().cpu()
        keep = (scores >= self.conf).nonzero().flatten()[: self.max_det]
        (ph, pw), (ch, cw) = x.tensor.shape[-2:], x.content
        fx, fy = pw / int(size[1]) * dec.width / cw, ph / int(size[0]) * dec.height / ch
        boxes = det["boxes"][keep].float().cpu().numpy() * np.array([fx, fy, fx, fy], np.float32)
        masks = det["masks"][keep, 0].float().cpu().numpy()
        preds = []
        for box, mask, k, score in zip(boxes, masks, det["labels"][keep].tolist(), scores[keep].tolist()):
            cid = int(k) - 1
            shown = [min(max(float(v), 0.0), float(lim)) for v, lim in zip(box, (dec.width, dec.height) * 2)]
            preds.append({
                "label": self.labels[cid] if 0 <= cid < len(self.labels) else f"class_{cid}",
                "class_id": cid,
                "score": round(float(score), 6),
                "box": [round(v, 2) for v in shown],
                "mask": paste_rle(mask, box, dec.height, dec.width, self.mask_threshold),
            })
        return preds

    def annotate(self, decoded: Decoded, record: Record) -> Any:
        """Translucent masks, then boxes with ``label score`` captions (Pillow's built-in font), on the
        input at its own size, where the record's boxes and masks are."""
        import numpy as np
        import torch
        from PIL import Image
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        img = torch.from_numpy(np.array(decoded.picture(), dtype=np.uint8)).permute(2, 0, 1)
        preds = record.predictions
        if preds:
            colours = [colour(p["class_id"]) for p in preds]
            masks = torch.from_numpy(np.stack([decode_rle(p["mask"]) for p in preds]))
            img = draw_segmentation_masks(img, masks, alpha=0.45, colors=colours)
            img = draw_bounding_boxes(img, torch.tensor([p["box"] for p in preds]), colors=colours, width=2,
                                      labels=[f"{p['label']} {p['score']:.2f}" for p in preds])
        return Image.fromarray(img.permute(1, 2, 0).numpy())

    def stream(self, sources: Any, **kwargs: Any):
        """As :meth:`Predictor.stream`; with ``save_masks`` each prediction gains ``mask_file``."""
        save_dir = kwargs.get("save_dir")
        masks = None
        if self.save_masks and save_dir:
            masks = PictureSaver(Path(save_dir) / "masks", suffix=".png", inputs=sources)
        for record in super().stream(sources, **kwargs):
            if masks is not None and record.ok:
                self._write_masks(masks, record)
            yield record

    @staticmethod
    def _write_masks(saver: PictureSaver, record: Record) -> None:
        from PIL import Image

        from cnnkit.io.files import atomic_path

        for i, p in enumerate(record.predictions):
            path = saver.target(record.path, ".png", tag=f"_{i}_{safe_name(str(p['label']))}")
            with atomic_path(path) as tmp:
                Image.fromarray(decode_rle(p["mask"]).astype("uint8") * 255).save(tmp, format="PNG")
            p["mask_file"] = str(path)


def validate(
    data: str, *, split: str = "val", model: str | None = None, weights: str | None = None, conf: float = 0.001,
    mask_threshold: float = 0.5, max_det: int = 100, batch_size: int = 4, workers: int = 2,
    device: str | None = None, threads: int | None = None,
) -> dict[str, Any]:
    """bbox and segm AP, AP50, AP75 (pycocotools) of a model on a COCO-format split.

    Model classes are matched to the dataset's categories by name, so a COCO model on
    COCO data and a finetuned model on its own data both score correctly; detections
    of classes the dataset lacks are dropped.
    """
    from cnnkit.data.coco import read_coco
    from cnnkit.eval.coco import CocoResults, evaluate

    ds = read_coco(data, split)
    predictor = InstanceSegmenter.load(model, weights, device=device, threads=threads, conf=conf,
                                       mask_threshold=mask_threshold, max_det=max_det)
    by_name = dict(zip(ds.labels, ds.cat_ids))
    category_ids = {i: by_name[n] for i, n in enumerate(predictor.labels) if n in by_name}
    if not category_ids:
        raise CnnkitError(f"{data}: none of the model's classes ({', '.join(predictor.labels[:5])} …) "
                          f"are dataset categories ({', '.join(ds.labels[:5])} …)")
    paths = {str(ds.image_path(im)): im["id"] for im in ds.gt["images"]}
    coco = CocoResults(image_ids=paths, category_ids=category_ids)
    failed = []
    for record in predictor.stream(list(paths), batch_size=batch_size, workers=workers):
        if record.error is not None:
            failed.append(f"{record.path}: {record.error}")
        record.predictions = [p for p in record.predictions if p["class_id"] in category_ids]
        coco.add(record)
    summary: dict[str, Any] = {"data": str(ds.annotations), "model": predictor.name, "images": len(paths),
                               "failed": failed}
    for iou_type in ("bbox", "segm"):
        res = evaluate(ds.gt, coco.results(), iou_type)
        summary[iou_type] = {"AP": res["AP"], "AP50": res["AP50"], "AP75": res["AP75"], "per_class": res["per_class"]}
    return summary


PREDICTOR = InstanceSegmenter
