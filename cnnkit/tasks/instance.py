"""Instance segmentation: Mask R-CNN boxes, labels and per-instance masks (COCO RLE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.device import Runtime
from cnnkit.errors import CnnkitError
from cnnkit.io.decode import Decoded
from cnnkit.io.draw import colour
from cnnkit.models import hub
from cnnkit.models.checkpoint import load_state_dict
from cnnkit.models.loader import Loaded, _load_into, load_checkpoint
from cnnkit.models.registry import get_spec
from cnnkit.records import Record
from cnnkit.tasks.base import PictureSaver, Predictor
from cnnkit.tasks.instance_post import decode_rle, to_predictions

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

    def preprocess(self, decoded: Decoded) -> Any:
        """A [0, 1] tensor; a very thin image is padded (bottom/right) so that the model's
        resize keeps its short side at least one stride-32 feature cell."""
        import math

        import numpy as np

        from cnnkit.train.instance import image_tensor

        rgb = decoded.rgb
        h, w = rgb.shape[:2]
        need = math.ceil(32 * max(h, w) / self.model.transform.max_size)
        if min(h, w) < need:
            rgb = np.pad(rgb, ((0, max(0, need - h)), (0, max(0, need - w)), (0, 0)))
        return image_tensor(rgb)

    def predict_batch(self, inputs: list[Any], decoded: list[Decoded]) -> list[list[dict[str, Any]]]:
        import torch

        preds = []
        with torch.inference_mode():
            outputs = self.model([x.to(self.runtime.device, self.runtime.dtype) for x in inputs])
            for out, dec in zip(outputs, decoded):
                h, w = dec.rgb.shape[:2]
                out["masks"] = out["masks"][..., :h, :w]  # drop the padding of thin images
                out["boxes"][:, 0::2].clamp_(0, w)
                out["boxes"][:, 1::2].clamp_(0, h)
                preds.append(to_predictions(out, self.labels, conf=self.conf, mask_threshold=self.mask_threshold,
                                            max_det=self.max_det))
        return preds

    def annotate(self, decoded: Decoded, record: Record) -> Any:
        """Translucent masks, then boxes with ``label score`` captions (Pillow's built-in font)."""
        import numpy as np
        import torch
        from PIL import Image
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        img = torch.from_numpy(np.array(decoded.rgb, dtype=np.uint8)).permute(2, 0, 1)
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
        masks = PictureSaver(Path(save_dir) / "masks", suffix=".png") if self.save_masks and save_dir else None
        for record in super().stream(sources, **kwargs):
            if masks is not None and record.ok:
                self._write_masks(masks, record)
            yield record

    @staticmethod
    def _write_masks(saver: PictureSaver, record: Record) -> None:
        from PIL import Image

        from cnnkit.io.files import atomic_path

        stem = Path(record.path).stem or "image"
        for i, p in enumerate(record.predictions):
            path = saver.target(f"{stem}_{i}_{p['label']}", ".png")
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
