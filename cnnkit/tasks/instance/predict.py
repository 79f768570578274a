"""Instance segmentation: Mask R-CNN boxes, labels and per-instance masks (COCO RLE)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnkit.device import Runtime
from cnnkit.engine import Predictor, StreamState, resolve_classes
from cnnkit.io.decode import Decoded, check_budget
from cnnkit.io.pictures import PictureSaver
from cnnkit.models.loader import Loaded
from cnnkit.records import Record
from cnnkit.results import Instance, Instances

if TYPE_CHECKING:
    from typing_extensions import Self


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
    runs: list[int]
    if threshold <= 0:  # every pixel passes, the zeros outside the box too
        runs = [0, total]
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
        runs = counts[:-1].tolist() if len(counts) > 1 and counts[-1] == 0 else counts.tolist()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


class InstanceSegmenter(Predictor):
    """Boxes, labels, scores and masks per image; ``--save-masks`` writes one PNG per instance."""

    task = "instance"

    def __init__(
        self,
        loaded: Loaded,
        runtime: Runtime,
        *,
        conf: float = 0.5,
        mask_threshold: float = 0.5,
        max_det: int = 100,
        save_masks: bool = False,
        classes: Sequence[int | str] | None = None,
        agnostic_nms: bool = False,
        save_pictures: bool = True,
    ) -> None:
        """``save_pictures``: whether a run with a save folder writes annotated pictures (masks alone: off)."""
        self.loaded = loaded
        self.agnostic_nms = agnostic_nms
        self.save_pictures = save_pictures
        self.name = loaded.name
        self.labels = loaded.labels
        self.runtime = runtime
        self.conf, self.mask_threshold, self.max_det = conf, mask_threshold, max_det
        self.save_masks = save_masks
        from cnnkit.tasks.detect.predict import WIDE_TOP_N

        kept = resolve_classes(classes, self.labels)
        self.classes = None if kept is None else frozenset(kept)
        model = loaded.module
        # Mask R-CNN keeps at most this many detections (over every class) before our own filters
        model.roi_heads.detections_per_img = max(max_det, 1) if self.classes is None else max(max_det, WIDE_TOP_N)
        model.roi_heads.score_thresh = min(model.roi_heads.score_thresh, conf)
        self.model = runtime.prepare(model)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: str | None = None,
        *,
        device: str | None = None,
        half: bool = False,
        threads: int | None = None,
        conf: float = 0.5,
        mask_threshold: float = 0.5,
        max_det: int = 100,
        save_masks: bool = False,
        classes: Sequence[int | str] | None = None,
        agnostic_nms: bool = False,
        save_pictures: bool = True,
        backend: str | None = None,
        **extra: Any,
    ) -> Self:
        """``classes`` (ids or names) keeps only instances of those classes, in records, pictures and masks;
        ``agnostic_nms`` suppresses overlapping instances across classes too (the heads' NMS is per class);
        ``backend``: ``auto`` or ``torch`` (Mask R-CNN runs on PyTorch; a runtime name is refused, as for
        Faster R-CNN); ``extra``: a subclass's own options, passed to its constructor (the tracker's)."""
        runtime = Runtime.create(device, half=half, threads=threads)
        from cnnkit.models.loader import resolve

        loaded = resolve("instance", model, weights)
        if backend is not None:
            from cnnkit.runtimes import compile_loaded

            loaded = compile_loaded(loaded, "instance", backend, device=runtime.device)
        return cls(
            loaded,
            runtime,
            conf=conf,
            mask_threshold=mask_threshold,
            max_det=max_det,
            save_masks=save_masks,
            classes=classes,
            agnostic_nms=agnostic_nms,
            save_pictures=save_pictures,
            **extra,
        )

    def preprocess(self, decoded: Decoded) -> _Input:
        """A [0, 1] tensor of at most about twice the model's working size, and where the image is in it
        (:func:`~cnnkit.models.preprocess.rcnn_input`: big images reduced, thin ones padded)."""
        from cnnkit.models.preprocess import image_tensor, rcnn_input, rcnn_working_size

        transform = self.model.transform
        min_size, max_size = int(transform.min_size[-1]), int(transform.max_size)
        height, width = decoded.rgb.shape[:2]
        wh, ww = rcnn_working_size(height, width, min_size, max_size)
        check_budget(decoded, 3 * wh * ww, f"the model's resize to {ww}x{wh}")
        rgb, content = rcnn_input(decoded.rgb, min_size, max_size)
        return _Input(image_tensor(rgb), content)

    def predict_batch(self, inputs: list[_Input], decoded: list[Decoded], state: StreamState) -> list[Instances]:
        """Mask R-CNN's own steps, stopping before it pastes every mask into a full-size float image:
        each kept mask is pasted here, box by box, straight into COCO RLE (:func:`paste_rle`)."""
        from collections import OrderedDict

        import torch

        from cnnkit.models.preprocess import by_shape

        model = self.model
        found: list[Any] = [None] * len(inputs)
        with torch.inference_mode():
            for group in by_shape([x.tensor for x in inputs]):
                images, _ = model.transform(
                    [inputs[i].tensor.to(self.runtime.device, self.runtime.dtype) for i in group]
                )
                features = model.backbone(images.tensors)
                if isinstance(features, torch.Tensor):
                    features = OrderedDict([("0", features)])
                proposals, _ = model.rpn(images, features)
                detections, _ = model.roi_heads(features, proposals, images.image_sizes)
                for i, det, size in zip(group, detections, images.image_sizes):
                    found[i] = (det, size)
        return [self._predictions(det, x, size, dec) for (det, size), x, dec in zip(found, inputs, decoded)]

    def _predictions(self, det: dict[str, Any], x: _Input, size: Any, dec: Decoded) -> Instances:
        """One image's detections in its original pixels (``class_id`` = network label − 1)."""
        import numpy as np

        scores = det["scores"].float().cpu()
        wanted = scores >= self.conf
        if self.classes is not None:  # before max_det, so other classes take no place among the kept
            import torch

            ids = torch.tensor(sorted(self.classes), dtype=torch.int64) + 1  # network labels count from 1
            wanted &= torch.isin(det["labels"].cpu(), ids)
        keep = wanted.nonzero().flatten()
        if self.agnostic_nms and len(keep):  # at the heads' own IoU, across classes
            import torchvision

            boxes_kept = det["boxes"][keep].float().cpu()
            keep = keep[torchvision.ops.nms(boxes_kept, scores[keep], self.model.roi_heads.nms_thresh)]
        keep = keep[: self.max_det]
        (ph, pw), (ch, cw) = x.tensor.shape[-2:], x.content
        (rh, rw), (sx, sy) = dec.rgb.shape[:2], dec.scale  # model input → rcnn input → decoded → original pixels
        fx, fy = pw / int(size[1]) * rw / cw * sx, ph / int(size[0]) * rh / ch * sy
        boxes = det["boxes"][keep].float().cpu().numpy() * np.array([fx, fy, fx, fy], np.float32)
        masks = det["masks"][keep, 0].float().cpu().numpy()
        preds = []
        for box, mask, k, score in zip(boxes, masks, det["labels"][keep].tolist(), scores[keep].tolist()):
            cid = int(k) - 1
            shown = [min(max(float(v), 0.0), float(lim)) for v, lim in zip(box, (dec.width, dec.height) * 2)]
            preds.append(
                Instance(
                    self.labels[cid] if 0 <= cid < len(self.labels) else f"class_{cid}",
                    cid,
                    round(float(score), 6),
                    tuple(round(v, 2) for v in shown),  # type: ignore[arg-type]  # four values
                    paste_rle(mask, box, dec.height, dec.width, self.mask_threshold),
                )
            )
        return Instances(preds, dec.width, dec.height)

    @property
    def reads_pixels(self) -> bool:
        """Only :meth:`preprocess` reads the picture; masks are pasted by its size."""
        return False

    @property
    def saves_pictures(self) -> bool:
        """Annotated pictures and masks need the full-size image."""
        return self.save_pictures or self.save_masks

    def save_outputs(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """The annotated picture (with ``save_pictures``); with ``save_masks`` also one PNG per instance, named by
        its ``mask_file``."""
        if self.save_pictures:
            super().save_outputs(saver, decoded, record)
        self.save_files(saver, decoded, record)

    def save_files(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """With ``save_masks``, one PNG per instance named by its ``mask_file`` (a video frame's by the frame)."""
        if self.save_masks:
            assert isinstance(record.result, Instances)
            tag = "" if record.frame is None else f"_{record.frame}"
            for p, path in zip(record.predictions, record.result.save_masks(saver, record.path, tag=tag)):
                p["mask_file"] = path


PREDICTOR = InstanceSegmenter
